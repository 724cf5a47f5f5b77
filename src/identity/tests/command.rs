//! `run_normalize`: one output line per input line, constant memory, counts.

use std::cell::RefCell;
use std::io::{self, BufRead, Read, Write};
use std::rc::Rc;

use super::super::{MAX_LINE_BYTES, NormalizeSummary, run_normalize};
use super::*;

fn run(key: MatchKey, country: Option<&str>, input: &[u8]) -> (String, NormalizeSummary) {
    let mut out = Vec::new();
    let summary = run_normalize(key, country, input, &mut out).unwrap();
    (String::from_utf8(out).unwrap(), summary)
}

#[test]
fn every_input_line_gets_exactly_one_output_line_with_value_and_hash_or_reason() {
    let (out, summary) = run(
        MatchKey::Email,
        None,
        b"Mary@Example.com\r\nnot an email\n\n  john_smith@gmail.com",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            format!("mary@example.com\t{}", sha256_hex(b"mary@example.com")).as_str(),
            "ERROR\tno @",
            "ERROR\tempty",
            format!(
                "john_smith@gmail.com\t{}",
                sha256_hex(b"john_smith@gmail.com")
            )
            .as_str(),
        ]
    );
    assert_eq!(
        summary,
        NormalizeSummary {
            lines: 4,
            ok: 2,
            rejected: 2
        }
    );
}

#[test]
fn phones_use_the_given_country_for_national_numbers() {
    let (out, _) = run(MatchKey::Phone, Some("US"), b"(650) 555-1212\n");
    assert_eq!(
        out,
        format!("16505551212\t{}\n", sha256_hex(b"16505551212"))
    );
    let (out, _) = run(MatchKey::Phone, None, b"(650) 555-1212\n");
    assert_eq!(out, "ERROR\tno country code\n");
}

#[test]
fn normalizing_phones_again_gives_the_same_lines() {
    let input = b"(650) 555-1212\n+44 20 7946 0958\n011 4321-5678\n5491123456789\n16505551212\n";
    for country in [None, Some("US"), Some("AR"), Some("GB")] {
        let (once, _) = run(MatchKey::Phone, country, input);
        let normalized: String = once
            .lines()
            .filter(|l| !l.starts_with("ERROR"))
            .map(|l| format!("{}\n", l.split('\t').next().unwrap()))
            .collect();
        let (twice, _) = run(MatchKey::Phone, country, normalized.as_bytes());
        let kept: String = once
            .lines()
            .filter(|l| !l.starts_with("ERROR"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(twice, kept, "{country:?}");
    }
}

#[test]
fn unhashed_keys_show_the_value_as_sent_in_the_second_column() {
    let (out, _) = run(
        MatchKey::Madid,
        None,
        b"6D92078A-8246-4BA4-AE5B-76104861E7DC\n CUST-1 \n",
    );
    assert_eq!(
        out,
        "6d92078a-8246-4ba4-ae5b-76104861e7dc\t6d92078a-8246-4ba4-ae5b-76104861e7dc\nERROR\tnot a device id\n"
    );
    let (out, _) = run(MatchKey::ExternId, None, b" CUST-1 \n");
    assert_eq!(out, "CUST-1\tCUST-1\n");
}

#[test]
fn a_line_that_is_not_utf8_is_an_error_line_and_the_next_line_still_works() {
    let (out, summary) = run(MatchKey::Fn, None, b"Val\xe9ry\nMary\n");
    assert_eq!(
        out,
        format!("ERROR\tnot valid UTF-8\nmary\t{}\n", sha256_hex(b"mary"))
    );
    assert_eq!(summary.rejected, 1);
}

#[test]
fn an_overlong_line_is_an_error_line_without_being_buffered() {
    let mut input = vec![b'a'; MAX_LINE_BYTES * 3];
    input.extend_from_slice(b"\nMary\n");
    // A small reader buffer makes the long line arrive in many chunks.
    let reader = io::BufReader::with_capacity(1000, &input[..]);
    let mut out = Vec::new();
    let summary = run_normalize(MatchKey::Fn, None, reader, &mut out).unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        format!("ERROR\tline too long\nmary\t{}\n", sha256_hex(b"mary"))
    );
    assert_eq!(summary.lines, 2);
}

#[test]
fn an_unknown_country_is_an_invalid_input_error_before_reading() {
    let err = run_normalize(MatchKey::Phone, Some("Narnia"), &b"1\n"[..], Vec::new()).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
}

#[test]
fn empty_input_gives_empty_output() {
    assert_eq!(
        run(MatchKey::Email, None, b""),
        (String::new(), NormalizeSummary::default())
    );
}

/// A reader that hands out one line per read and checks, before handing out the next, that
/// the answer to the previous one has already reached the writer — as an operator typing at
/// a terminal needs.
struct Interactive {
    lines: Vec<&'static [u8]>,
    current: &'static [u8],
    served: usize,
    output: Rc<RefCell<Vec<u8>>>,
}

impl Read for Interactive {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        unreachable!("run_normalize reads through BufRead")
    }
}

impl BufRead for Interactive {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.current.is_empty() && self.served < self.lines.len() {
            let answered = self.output.borrow().iter().filter(|&&b| b == b'\n').count();
            assert_eq!(
                answered, self.served,
                "answer not flushed before blocking on input"
            );
            self.current = self.lines[self.served];
            self.served += 1;
        }
        Ok(self.current)
    }

    fn consume(&mut self, n: usize) {
        self.current = &self.current[n..];
    }
}

struct Shared(Rc<RefCell<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn each_answer_is_flushed_before_waiting_for_more_input() {
    let output = Rc::new(RefCell::new(Vec::new()));
    let input = Interactive {
        lines: vec![b"M\n", b"female\n", b"x\n"],
        current: b"",
        served: 0,
        output: output.clone(),
    };
    let summary = run_normalize(MatchKey::Gen, None, input, Shared(output.clone())).unwrap();
    assert_eq!(
        summary,
        NormalizeSummary {
            lines: 3,
            ok: 2,
            rejected: 1
        }
    );
}
