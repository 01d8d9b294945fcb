//! Prometheus-style durations (`1m30s`, `15d`) and byte sizes (`512MB`), with serde support.
//!
//! Written by hand because Prometheus's syntax differs from the general-purpose crates in ways
//! users would notice: `humantime` accepts spaces and counts a year as 365.25 days, while
//! Prometheus wants units from largest to smallest, no spaces, and `1y` = 365 days. Sizes use
//! powers of 1024, as Prometheus writes them for `--storage.tsdb.retention.size`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A non-negative duration written the Prometheus way: `[0-9]+(ms|s|m|h|d|w|y)`, repeated,
/// largest unit first (`1h30m`, `500ms`, `15d`). A bare `0` is accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(pub std::time::Duration);

/// Why a duration or size string was rejected; the message quotes the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    /// The string is not a Prometheus duration.
    #[error(
        "invalid duration {0:?}: expected a number and unit, e.g. 30s, 1m30s, 15d (units ms, s, m, h, d, w, y)"
    )]
    Duration(String),
    /// The string is not a size.
    #[error(
        "invalid size {0:?}: expected a number and unit, e.g. 512MB, 50GB (units B, KB, MB, GB, TB, PB, EB)"
    )]
    Size(String),
}

const DURATION_UNITS: [(&str, u64); 7] = [
    ("y", 365 * 24 * 3600 * 1000),
    ("w", 7 * 24 * 3600 * 1000),
    ("d", 24 * 3600 * 1000),
    ("h", 3600 * 1000),
    ("m", 60 * 1000),
    ("s", 1000),
    ("ms", 1),
];

impl Duration {
    /// A duration of whole seconds.
    pub const fn from_secs(secs: u64) -> Self {
        Self(std::time::Duration::from_secs(secs))
    }

    /// A duration of milliseconds.
    pub const fn from_millis(ms: u64) -> Self {
        Self(std::time::Duration::from_millis(ms))
    }

    /// The standard-library duration.
    pub const fn get(self) -> std::time::Duration {
        self.0
    }

    /// Whole milliseconds.
    pub fn as_millis(self) -> u64 {
        u64::try_from(self.0.as_millis()).unwrap_or(u64::MAX)
    }
}

impl FromStr for Duration {
    type Err = UnitError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || UnitError::Duration(s.to_string());
        if s == "0" {
            return Ok(Self::default());
        }
        if s.is_empty() {
            return Err(err());
        }
        let mut rest = s.as_bytes();
        let mut total: u64 = 0;
        // Index into DURATION_UNITS of the last unit used: units must strictly decrease.
        let mut last_unit: Option<usize> = None;
        while !rest.is_empty() {
            let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
            if digits == 0 {
                return Err(err());
            }
            let number: u64 = std::str::from_utf8(&rest[..digits])
                .ok()
                .and_then(|d| d.parse().ok())
                .ok_or_else(err)?;
            rest = &rest[digits..];
            let letters = rest.iter().take_while(|b| b.is_ascii_alphabetic()).count();
            let unit = std::str::from_utf8(&rest[..letters]).map_err(|_| err())?;
            rest = &rest[letters..];
            let idx = DURATION_UNITS
                .iter()
                .position(|(u, _)| *u == unit)
                .ok_or_else(err)?;
            if last_unit.is_some_and(|last| idx <= last) {
                return Err(err());
            }
            last_unit = Some(idx);
            total = number
                .checked_mul(DURATION_UNITS[idx].1)
                .and_then(|ms| total.checked_add(ms))
                .ok_or_else(err)?;
        }
        Ok(Self::from_millis(total))
    }
}

impl fmt::Display for Duration {
    /// Formats the way Prometheus prints durations: `1h30m`, `15d`, `500ms`, `0s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ms = self.as_millis();
        if ms == 0 {
            return f.write_str("0s");
        }
        for (unit, size) in DURATION_UNITS {
            if ms >= size {
                write!(f, "{}{unit}", ms / size)?;
                ms %= size;
            }
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(FromStrVisitor::<Self>::new())
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// A size in bytes written the Prometheus way (`512MB`, `50GB`, `1TB`), in powers of 1024.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

const SIZE_UNITS: [(&str, u64); 7] = [
    ("EB", 1 << 60),
    ("PB", 1 << 50),
    ("TB", 1 << 40),
    ("GB", 1 << 30),
    ("MB", 1 << 20),
    ("KB", 1 << 10),
    ("B", 1),
];

impl ByteSize {
    /// The number of bytes.
    pub const fn bytes(self) -> u64 {
        self.0
    }
}

impl FromStr for ByteSize {
    type Err = UnitError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || UnitError::Size(s.to_string());
        if s == "0" {
            return Ok(Self(0));
        }
        let digits = s.bytes().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 {
            return Err(err());
        }
        let number: u64 = s[..digits].parse().map_err(|_| err())?;
        let unit = &s[digits..];
        let (_, mult) = SIZE_UNITS
            .iter()
            .find(|(u, _)| *u == unit)
            .ok_or_else(err)?;
        number.checked_mul(*mult).map(Self).ok_or_else(err)
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (unit, size) in SIZE_UNITS {
            if self.0 >= size && self.0.is_multiple_of(size) {
                return write!(f, "{}{unit}", self.0 / size);
            }
        }
        f.write_str("0B")
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(FromStrVisitor::<Self>::new())
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Parses a string value inside the visitor, so the YAML deserializer attaches the value's own
/// line and key path to a parse error.
struct FromStrVisitor<T>(std::marker::PhantomData<T>);

impl<T> FromStrVisitor<T> {
    fn new() -> Self {
        Self(std::marker::PhantomData)
    }
}

impl<T: FromStr<Err = UnitError>> serde::de::Visitor<'_> for FromStrVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string such as 15s or 512MB")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<T, E> {
        v.parse().map_err(E::custom)
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<T, E> {
        // YAML reads a bare `0` as a number.
        self.visit_str(&v.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_as_prometheus_does() {
        let ok = [
            ("0", 0),
            ("500ms", 500),
            ("15s", 15_000),
            ("1m30s", 90_000),
            ("1h30m", 5_400_000),
            ("15d", 15 * 86_400_000),
            ("1w", 7 * 86_400_000),
            ("1y", 365 * 86_400_000),
            ("1h0m5s100ms", 3_605_100),
        ];
        for (text, ms) in ok {
            assert_eq!(text.parse::<Duration>().unwrap().as_millis(), ms, "{text}");
        }
        for bad in [
            "",
            "5",
            "1.5s",
            "s",
            "1m1h",
            "1s1s",
            "1 m",
            "-1s",
            "1sec",
            "99999999999999999999y",
        ] {
            assert!(
                bad.parse::<Duration>().is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn durations_print_round_trip() {
        for text in ["0s", "500ms", "1m30s", "15d", "1w", "1y", "1h0m5s"] {
            let d: Duration = text.parse().unwrap();
            let printed = d.to_string();
            assert_eq!(
                printed.parse::<Duration>().unwrap(),
                d,
                "{text} -> {printed}"
            );
        }
        assert_eq!(Duration::from_secs(90).to_string(), "1m30s");
    }

    #[test]
    fn sizes_use_powers_of_1024() {
        assert_eq!("512MB".parse::<ByteSize>().unwrap().bytes(), 512 << 20);
        assert_eq!("50GB".parse::<ByteSize>().unwrap().bytes(), 50 << 30);
        assert_eq!("1KB".parse::<ByteSize>().unwrap().bytes(), 1024);
        assert_eq!("7B".parse::<ByteSize>().unwrap().bytes(), 7);
        assert_eq!(ByteSize(1 << 30).to_string(), "1GB");
        for bad in ["", "GB", "1.5GB", "1gb", "1 GB", "1XB", "-1GB"] {
            assert!(
                bad.parse::<ByteSize>().is_err(),
                "{bad:?} should be rejected"
            );
        }
    }
}
