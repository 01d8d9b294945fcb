//! Feeds arbitrary bytes to both exposition parsers: they must return entries or an error,
//! never panic, and label decoding of every accepted sample must not panic either.
#![no_main]

use ingest::exposition::{Entry, Format, TextParser};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for format in [Format::Prometheus, Format::OpenMetrics] {
        for entry in TextParser::with_format(data, format) {
            match entry {
                Ok(Entry::Sample(s)) => s.labels().for_each(drop),
                Ok(_) => {}
                Err(_) => break,
            }
        }
    }
});
