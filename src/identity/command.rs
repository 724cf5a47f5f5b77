//! `cdp-meta-sync normalize --key KEY [--country CC]`: why does this customer not match?

use std::io::{self, BufRead, BufWriter, Write};

use super::{MatchKey, Normalizer};

/// Counts of one `normalize` run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NormalizeSummary {
    pub lines: u64,
    pub ok: u64,
    pub rejected: u64,
}

/// Lines longer than this are answered `ERROR\tline too long` without being buffered, so
/// memory stays constant whatever the input.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// Streaming `normalize` command body: reads one raw value per input line (`\n` or `\r\n`)
/// and writes one output line per input line: `normalized\tcell` (the cell exactly as sent:
/// SHA-256 for hashed keys, the value itself for MADID / EXTERN_ID / LOOKALIKE_VALUE) or
/// `ERROR\treason`. Lines that are not UTF-8 are `ERROR\tnot valid UTF-8`. Output is
/// flushed whenever the input has nothing more buffered, so it works interactively too.
///
/// An unknown `country` is an `InvalidInput` error before anything is read.
pub fn run_normalize(
    key: MatchKey,
    country: Option<&str>,
    mut input: impl BufRead,
    output: impl Write,
) -> io::Result<NormalizeSummary> {
    let normalizer = Normalizer::new(country)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    let mut out = BufWriter::with_capacity(64 * 1024, output);
    let mut summary = NormalizeSummary::default();
    let mut line: Vec<u8> = Vec::with_capacity(256);
    let mut too_long = false;
    let mut normalized = String::with_capacity(256);
    let mut cell = String::with_capacity(256);
    let mut emit = |line: &[u8], too_long: bool, out: &mut BufWriter<_>| -> io::Result<()> {
        summary.lines += 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let result = if too_long {
            Err("line too long")
        } else {
            match std::str::from_utf8(line) {
                Err(_) => Err("not valid UTF-8"),
                Ok(raw) => {
                    normalized.clear();
                    cell.clear();
                    normalizer
                        .normalize_into(key, raw, &mut normalized)
                        .and_then(|()| normalizer.cell_into(key, raw, &mut cell))
                        .map_err(|r| r.reason())
                }
            }
        };
        match result {
            Ok(()) => {
                summary.ok += 1;
                writeln!(out, "{normalized}\t{cell}")
            }
            Err(reason) => {
                summary.rejected += 1;
                writeln!(out, "ERROR\t{reason}")
            }
        }
    };
    loop {
        let chunk = match input.fill_buf() {
            Ok(chunk) => chunk,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            if !line.is_empty() || too_long {
                emit(&line, too_long, &mut out)?;
            }
            break;
        }
        let (used, end_of_line) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, Some(i)),
            None => (chunk.len(), None),
        };
        let part = &chunk[..end_of_line.unwrap_or(used)];
        if line.len() + part.len() > MAX_LINE_BYTES {
            too_long = true;
            line.clear();
        } else if !too_long {
            line.extend_from_slice(part);
        }
        let exhausted = used == chunk.len();
        input.consume(used);
        if end_of_line.is_some() {
            emit(&line, too_long, &mut out)?;
            line.clear();
            too_long = false;
        }
        if exhausted {
            // The next read may block (a terminal, a slow pipe): show what we have.
            out.flush()?;
        }
    }
    out.flush()?;
    Ok(summary)
}
