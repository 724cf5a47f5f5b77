//! Streaming: a CSV export → its data rows, one at a time, each validated through the map and
//! tagged with the 1-based line it starts on. Memory stays constant whatever the file's size: only
//! the csv reader's buffer, the current row and the line breaks not yet behind it are held.
//!
//! A bad row (wrong width, a value the map refuses, bytes that are not UTF-8, a NUL byte, which
//! PostgreSQL text cannot hold) is a [`RejectedRow`] naming its line and the reason — never its
//! values; the rows after it are read as usual.
use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::Read;
use std::rc::Rc;

use anyhow::Context;

use super::map::{CsvMap, Layout, NewEvent};

/// One rejected row: where, why, and the raw fields (for the rejects file only).
#[derive(Debug, Clone)]
pub struct RejectedRow {
    pub file: String,
    pub line: u64,
    pub reason: String,
    pub fields: Vec<String>,
}

/// A data row: the event to insert, or why it is refused.
#[derive(Debug)]
pub enum Row {
    Good { line: u64, event: Box<NewEvent> },
    Bad(RejectedRow),
}

/// Reads `input` row by row (see the module docs); `name` is used in rejections.
pub struct RowReader<'m, R: Read> {
    map: &'m CsvMap,
    name: String,
    reader: csv::Reader<Tracked<R>>,
    breaks: Rc<RefCell<LineBreaks>>,
    headers: Vec<Vec<String>>,
    layout: Option<Layout>,
    record: csv::ByteRecord,
}

impl<'m, R: Read> RowReader<'m, R> {
    pub fn new(map: &'m CsvMap, name: &str, input: R) -> Self {
        let breaks = Rc::new(RefCell::new(LineBreaks::default()));
        let tracked = Tracked {
            inner: input,
            offset: 0,
            breaks: breaks.clone(),
        };
        let reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .delimiter(map.delimiter as u8)
            .from_reader(tracked);
        Self {
            map,
            name: name.to_string(),
            reader,
            breaks,
            headers: Vec::with_capacity(map.header_rows),
            layout: None,
            record: csv::ByteRecord::new(),
        }
    }

    /// The next data row; `None` at the end. An error means the input cannot be read at all
    /// (I/O) or the map does not fit the file's headers.
    pub fn next_row(&mut self) -> anyhow::Result<Option<Row>> {
        loop {
            if !self
                .reader
                .read_byte_record(&mut self.record)
                .with_context(|| format!("Failed to read {}", self.name))?
            {
                return Ok(None);
            }
            let start = self.record.position().map_or(0, |p| p.byte());
            let line = self.breaks.borrow_mut().line_at(start);
            if self.headers.len() < self.map.header_rows {
                let header = self
                    .record
                    .iter()
                    .map(|f| String::from_utf8_lossy(f).into_owned())
                    .collect();
                self.headers.push(header);
                continue;
            }
            if self.record.iter().all(|f| f.trim_ascii().is_empty()) {
                continue;
            }
            return Ok(Some(self.data_row(line)?));
        }
    }

    fn data_row(&mut self, line: u64) -> anyhow::Result<Row> {
        let reject = |record: &csv::ByteRecord, reason: String| {
            Row::Bad(RejectedRow {
                file: self.name.clone(),
                line,
                reason,
                fields: record
                    .iter()
                    .map(|f| String::from_utf8_lossy(f).into_owned())
                    .collect(),
            })
        };
        let mut fields = Vec::with_capacity(self.record.len());
        for (i, raw) in self.record.iter().enumerate() {
            if raw.contains(&0) {
                let why = format!(
                    "column {} contains a NUL byte, which text cannot hold",
                    i + 1
                );
                return Ok(reject(&self.record, why));
            }
            match std::str::from_utf8(raw) {
                Ok(text) => fields.push(text),
                Err(_) => {
                    let why = format!(
                        "not a readable CSV row (encoding must be UTF-8): column {}",
                        i + 1
                    );
                    return Ok(reject(&self.record, why));
                }
            }
        }
        let layout = match &self.layout {
            Some(l) => l,
            None => self
                .layout
                .insert(self.map.resolve(&self.headers).with_context(|| {
                    format!("{}: the map does not fit the file's headers", self.name)
                })?),
        };
        Ok(match layout.parse_row(&fields) {
            Ok(event) => Row::Good {
                line,
                event: Box::new(event),
            },
            Err(reason) => reject(&self.record, reason),
        })
    }
}

/// Every row of `input` at once, good and bad, in file order (for small inputs and tests).
pub fn read_all(
    map: &CsvMap,
    name: &str,
    input: impl Read,
) -> anyhow::Result<(Vec<NewEvent>, Vec<RejectedRow>)> {
    let mut rows = RowReader::new(map, name, input);
    let (mut good, mut bad) = (Vec::new(), Vec::new());
    while let Some(row) = rows.next_row()? {
        match row {
            Row::Good { event, .. } => good.push(*event),
            Row::Bad(r) => bad.push(r),
        }
    }
    Ok((good, bad))
}

/// The byte offsets of the line breaks (`\r`, `\n`) read but not yet behind the current record,
/// and the number of `\n` before them.
#[derive(Default)]
struct LineBreaks {
    pending: VecDeque<(u64, bool)>,
    newlines_behind: u64,
}

impl LineBreaks {
    /// The 1-based line of the first non-blank byte at or after `at`, where a record really
    /// starts: the csv reader puts a record's start before the blank lines it skipped. Offsets
    /// must come in increasing order.
    fn line_at(&mut self, mut at: u64) -> u64 {
        while let Some(&(offset, is_newline)) = self.pending.front() {
            if offset < at {
                self.pending.pop_front();
            } else if offset == at {
                // A blank line's break at the record's start: the record starts after it.
                self.pending.pop_front();
                at += 1;
            } else {
                break;
            }
            self.newlines_behind += is_newline as u64;
        }
        self.newlines_behind + 1
    }
}

/// The input, noting the offset of each line break as the csv reader pulls bytes through.
struct Tracked<R> {
    inner: R,
    offset: u64,
    breaks: Rc<RefCell<LineBreaks>>,
}

impl<R: Read> Read for Tracked<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut breaks = self.breaks.borrow_mut();
        for (i, b) in buf[..n].iter().enumerate() {
            if matches!(b, b'\n' | b'\r') {
                breaks
                    .pending
                    .push_back((self.offset + i as u64, *b == b'\n'));
            }
        }
        self.offset += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAP: &str = r#"
        delimiter = ";"
        header_rows = 2
        [constants]
        action_source = "website"
        [columns]
        event_name = "name"
        event_time = "time"
        event_id = "id"
    "#;

    fn lines(bad: &[RejectedRow]) -> Vec<(u64, &str)> {
        bad.iter().map(|r| (r.line, r.reason.as_str())).collect()
    }

    #[test]
    fn header_rows_are_skipped_and_bad_rows_carry_their_file_line() {
        let csv = "export of 2024-07-01;;\nname;time;id\nLead;1719852447;a\n\nLead;yesterday;b\nLead;1719852447\n";
        let map = CsvMap::parse(MAP).unwrap();
        let (good, bad) = read_all(&map, "f.csv", csv.as_bytes()).unwrap();
        assert_eq!(good.len(), 1);
        assert_eq!(good[0].event_id, "a");
        assert_eq!(
            lines(&bad),
            vec![
                (
                    5,
                    "event_time is not a date in any of the map's time_formats"
                ),
                (6, "expected 3 columns, found 2")
            ]
        );
    }

    #[test]
    fn a_nul_byte_or_bad_utf8_makes_that_row_bad_and_the_rest_is_read() {
        let csv = b"h;h;h\nname;time;id\r\nLead;1719852447;a\0b\r\n\r\n\r\nLead;1719852447;\xff\nLead;1719852447;c\n\"Lead\";\"17198\n52447\";d\nLead;x;e\n";
        let map = CsvMap::parse(MAP).unwrap();
        let (good, bad) = read_all(&map, "f.csv", &csv[..]).unwrap();
        let ids: Vec<&str> = good.iter().map(|e| e.event_id.as_str()).collect();
        assert_eq!(ids, vec!["c"]);
        assert_eq!(
            lines(&bad),
            vec![
                (3, "column 3 contains a NUL byte, which text cannot hold"),
                (
                    6,
                    "not a readable CSV row (encoding must be UTF-8): column 3"
                ),
                (
                    8,
                    "event_time is not a date in any of the map's time_formats"
                ),
                (
                    10,
                    "event_time is not a date in any of the map's time_formats"
                ),
            ]
        );
    }

    #[test]
    fn a_blank_event_id_cell_is_a_bad_row_not_a_made_up_id() {
        let csv = "h;h;h\nname;time;id\nLead;1719852447;   \nLead;1719852447;ok\n";
        let map = CsvMap::parse(MAP).unwrap();
        let (good, bad) = read_all(&map, "f.csv", csv.as_bytes()).unwrap();
        assert_eq!(good.len(), 1);
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].line, 3);
        assert!(bad[0].reason.starts_with("event_id is empty"), "{bad:?}");
    }
}
