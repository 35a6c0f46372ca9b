//! Durations for people: rounded to what a reader needs, in status, check, logs and the page.
//!
//! At most the two largest units (`10s`, `1m 40s`, `4y 29d`), and below a second milliseconds
//! with one decimal (`0.7ms`): "10s 2ms 947us 253ns" says nothing more than "10s". Fields
//! meant for machines carry numbers (`latency_ms`), and metrics stay exact.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

/// (label, seconds): a year and a month as humantime counts them.
const UNITS: [(&str, u64); 6] = [
    ("y", 31_557_600),
    ("mo", 2_630_016),
    ("d", 86_400),
    ("h", 3_600),
    ("m", 60),
    ("s", 1),
];

/// `d` rounded for people.
pub fn human(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        return format!("{:.1}ms", d.as_secs_f64() * 1000.0);
    }
    let mut left = d.as_secs();
    let mut parts = Vec::new();
    for (label, secs) in UNITS {
        let n = left / secs;
        left %= secs;
        if n > 0 {
            parts.push(format!("{n}{label}"));
        }
        if parts.len() == 2 || (!parts.is_empty() && left == 0) {
            break;
        }
    }
    // Under a minute, milliseconds are the second unit: "1s 500ms" (a lag of 1.5 s is not 1 s).
    let ms = d.subsec_millis();
    if parts.len() == 1 && d < Duration::from_secs(60) && ms > 0 {
        parts.push(format!("{ms}ms"));
    }
    parts.join(" ")
}

/// Reads what [`human`] writes, and humantime's forms too.
pub fn parse(s: &str) -> Option<Duration> {
    let s = s.trim();
    if let Some(ms) = s.strip_suffix("ms").and_then(|n| n.parse::<f64>().ok()) {
        return (ms.is_finite() && ms >= 0.0).then(|| Duration::from_secs_f64(ms / 1000.0));
    }
    let mut total = Duration::ZERO;
    for part in s.split_whitespace() {
        let split = part.find(|c: char| !c.is_ascii_digit())?;
        let (n, label) = part.split_at(split);
        let n: u64 = n.parse().ok()?;
        match UNITS.iter().find(|(l, _)| *l == label) {
            Some((_, secs)) => total += Duration::from_secs(n.checked_mul(*secs)?),
            None => total += humantime::parse_duration(part).ok()?,
        }
    }
    Some(total)
}

/// serde for `Option<Duration>` as [`human`] text.
pub mod opt {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&human(*d)),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        let text: Option<String> = Option::deserialize(d)?;
        text.map(|t| {
            parse(&t).ok_or_else(|| serde::de::Error::custom(format!("not a duration: {t:?}")))
        })
        .transpose()
    }
}

/// serde for `Duration` as [`human`] text.
pub mod plain {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&human(*d))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let t = String::deserialize(d)?;
        parse(&t).ok_or_else(|| serde::de::Error::custom(format!("not a duration: {t:?}")))
    }
}

/// Milliseconds as a number, for machines.
pub fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounded_for_people() {
        let cases = [
            (Duration::new(10, 2_947_253), "10s 2ms"),
            (Duration::from_secs(10), "10s"),
            (Duration::from_secs(100), "1m 40s"),
            (Duration::from_secs(3600), "1h"),
            (Duration::from_secs(3605), "1h 5s"),
            (
                Duration::from_secs(4 * 31_557_600 + 29 * 86_400 + 7),
                "4y 29d",
            ),
            (Duration::from_nanos(657_592), "0.7ms"),
            (Duration::from_millis(12), "12.0ms"),
        ];
        for (d, want) in cases {
            assert_eq!(human(d), want, "{d:?}");
        }
    }

    #[test]
    fn what_is_written_reads_back_roughly() {
        for d in [
            Duration::from_millis(700),
            Duration::from_secs(100),
            Duration::from_secs(4 * 31_557_600 + 29 * 86_400),
        ] {
            assert_eq!(parse(&human(d)), Some(d), "{}", human(d));
        }
        assert_eq!(parse("13ms 756us"), Some(Duration::from_micros(13_756)));
        assert_eq!(ms(Duration::from_nanos(657_592)), 0.658);
    }
}
