//! The node tables of `check` and `status`: columns padded to their widest cell, the last one
//! free, each row coloured by the node's role on a terminal.

use std::fmt::Write as _;

use crate::decide::select::Role;

/// Colours for a terminal (`None`: plain text).
pub(crate) fn paint(colour: bool) -> impl Fn(&str, &str) -> String {
    move |code: &str, text: &str| {
        if colour {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
}

/// A role as the tables write it.
pub(crate) fn role_word(role: Role) -> &'static str {
    match role {
        Role::Primary => "primary",
        Role::Backup => "backup",
        Role::Excluded => "excluded",
    }
}

/// The table: `header`, then one line per row, each painted by its row's role.
pub fn render(header: &[&str], rows: &[(Role, Vec<String>)], colour: bool) -> String {
    let paint = paint(colour);
    let columns = rows
        .iter()
        .map(|(_, c)| c.len())
        .chain([header.len()])
        .max()
        .unwrap_or(0);
    let mut widths = vec![0; columns];
    for cells in std::iter::once(header.iter().map(|h| h.to_string()).collect::<Vec<_>>())
        .chain(rows.iter().map(|(_, c)| c.clone()))
    {
        for (w, c) in widths.iter_mut().zip(&cells) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                l.push_str(c);
            } else {
                let pad = widths[i].saturating_sub(c.chars().count());
                let _ = write!(l, "{c}{}  ", " ".repeat(pad));
            }
        }
        l.trim_end().to_string()
    };
    let mut out = String::new();
    let head: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    out.push_str(&line(&head));
    out.push('\n');
    for (role, cells) in rows {
        let code = match role {
            Role::Primary => "1;32",
            Role::Backup => "32",
            Role::Excluded => "31",
        };
        out.push_str(&paint(code, &line(cells)));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_by_characters_and_the_last_is_free() {
        let rows = vec![
            (
                Role::Primary,
                vec!["a".into(), "héllo".into(), "free text".into()],
            ),
            (Role::Excluded, vec!["bb".into(), "x".into(), "why".into()]),
        ];
        let t = render(&["N", "V", "R"], &rows, false);
        assert_eq!(t, "N   V      R\na   héllo  free text\nbb  x      why\n");
        assert!(render(&["N"], &rows[..1], true).contains("\x1b[1;32m"));
    }
}
