//! Error text helpers shared by the modules that turn library errors into operator messages.

/// Libraries (Tera, reqwest) nest the useful message in `source()`; flatten the chain into one
/// line.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg.replace('\n', " ")
}
