//! DOBY, DOBM, DOBD and CAPI `db`.
//!
//! Full dates are accepted only in year-first forms, which are unambiguous:
//! `YYYY-MM-DD`, `YYYY/MM/DD`, `YYYY.MM.DD` (month and day may have one digit), optionally
//! followed by a time (`1997-02-16T00:00:00Z`, `1997-02-16 00:00:00+00` — how Postgres prints
//! `DATE` and `timestamp` values), and the compact `YYYYMMDD`.
//! Day-first and month-first forms (`16/02/1997`, `02/16/1997`) are rejected as
//! "ambiguous day/month order", even when the day is above 12: accepting only some of a
//! column's values would hide that the whole column needs a conversion.
//! Years must be within 1900..=current year (Meta's documented DOBY range); impossible dates
//! (`1997-02-30`, `1999-02-29`) are rejected.
//!
//! Bare components: DOBY takes `YYYY`; DOBM takes `1`–`12` (zero-padded) or a month name in
//! English (also 3-letter abbreviations), Spanish, Portuguese or Italian; DOBD takes `1`–`31`.
//! `db` needs a full date.

use chrono::NaiveDate;

use super::Rejection;
use super::text::fold_key;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Ymd {
    pub year: u16,
    pub month: u8,
    pub day: u8,
}

const NOT_A_DATE: Rejection = Rejection::Invalid("not a date");

fn digits(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 4 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn check_year(year: u32, max_year: u16) -> Result<u16, Rejection> {
    if (1900..=u32::from(max_year)).contains(&year) {
        Ok(year as u16)
    } else {
        Err(Rejection::Invalid("year out of range"))
    }
}

/// Parses a full date. `s` is already trimmed and non-empty.
pub(super) fn parse_full(s: &str, max_year: u16) -> Result<Ymd, Rejection> {
    let b = s.as_bytes();
    let (y, m, d) = if b.len() == 8 && b.iter().all(u8::is_ascii_digit) {
        (&s[0..4], &s[4..6], &s[6..8])
    } else {
        // Cut a time part off: the date is everything before the first 'T' or space.
        let date = s.split(['T', 't', ' ']).next().unwrap_or(s);
        let sep = date
            .bytes()
            .find(|b| matches!(b, b'-' | b'/' | b'.'))
            .ok_or(NOT_A_DATE)?;
        let mut parts = date.split(sep as char);
        let (Some(a), Some(m), Some(c), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(NOT_A_DATE);
        };
        if a.len() == 4 && (1..=2).contains(&m.len()) && (1..=2).contains(&c.len()) {
            (a, m, c)
        } else if (1..=2).contains(&a.len()) && (1..=2).contains(&m.len()) && c.len() == 4 {
            if digits(a).is_some() && digits(m).is_some() && digits(c).is_some() {
                return Err(Rejection::Invalid("ambiguous day/month order"));
            }
            return Err(NOT_A_DATE);
        } else {
            return Err(NOT_A_DATE);
        }
    };
    let (Some(y), Some(m), Some(d)) = (digits(y), digits(m), digits(d)) else {
        return Err(NOT_A_DATE);
    };
    let year = check_year(y, max_year)?;
    if NaiveDate::from_ymd_opt(i32::from(year), m, d).is_none() {
        return Err(Rejection::Invalid("impossible date"));
    }
    Ok(Ymd {
        year,
        month: m as u8,
        day: d as u8,
    })
}

fn push_2(out: &mut String, n: u8) {
    out.push(char::from(b'0' + n / 10));
    out.push(char::from(b'0' + n % 10));
}

/// CAPI `db`: `YYYYMMDD`.
pub(super) fn db_into(s: &str, max_year: u16, out: &mut String) -> Result<(), Rejection> {
    let date = parse_full(s, max_year)?;
    push_year(out, date.year);
    push_2(out, date.month);
    push_2(out, date.day);
    Ok(())
}

fn push_year(out: &mut String, year: u16) {
    push_2(out, (year / 100) as u8);
    push_2(out, (year % 100) as u8);
}

/// DOBY: `YYYY`, from a bare year or a full date.
pub(super) fn year_into(s: &str, max_year: u16, out: &mut String) -> Result<(), Rejection> {
    let year = if s.len() == 4 && s.bytes().all(|b| b.is_ascii_digit()) {
        check_year(digits(s).ok_or(NOT_A_DATE)?, max_year)?
    } else {
        parse_full(s, max_year)?.year
    };
    push_year(out, year);
    Ok(())
}

/// DOBM: `MM`, from `1`–`12`, a month name, or a full date.
pub(super) fn month_into(s: &str, max_year: u16, out: &mut String) -> Result<(), Rejection> {
    let month = if s.len() <= 2 && s.bytes().all(|b| b.is_ascii_digit()) {
        match digits(s) {
            Some(m @ 1..=12) => m as u8,
            _ => return Err(Rejection::Invalid("month out of range")),
        }
    } else if s.chars().any(char::is_alphabetic) {
        month_by_name(&fold_key(s)).ok_or(Rejection::Invalid("unknown month name"))?
    } else {
        parse_full(s, max_year)?.month
    };
    push_2(out, month);
    Ok(())
}

/// DOBD: `DD`, from `1`–`31` or a full date.
pub(super) fn day_into(s: &str, max_year: u16, out: &mut String) -> Result<(), Rejection> {
    let day = if s.len() <= 2 && s.bytes().all(|b| b.is_ascii_digit()) {
        match digits(s) {
            Some(d @ 1..=31) => d as u8,
            _ => return Err(Rejection::Invalid("day out of range")),
        }
    } else {
        parse_full(s, max_year)?.day
    };
    push_2(out, day);
    Ok(())
}

fn month_by_name(key: &str) -> Option<u8> {
    const MONTHS: [&[&str]; 12] = [
        &["january", "jan", "enero", "janeiro", "gennaio"],
        &["february", "feb", "febrero", "fevereiro", "febbraio"],
        &["march", "mar", "marzo", "marco"],
        &["april", "apr", "abril", "aprile"],
        &["may", "mayo", "maio", "maggio"],
        &["june", "jun", "junio", "junho", "giugno"],
        &["july", "jul", "julio", "julho", "luglio"],
        &["august", "aug", "agosto"],
        &[
            "september",
            "sep",
            "sept",
            "septiembre",
            "setiembre",
            "setembro",
            "settembre",
        ],
        &["october", "oct", "octubre", "outubro", "ottobre"],
        &["november", "nov", "noviembre", "novembro", "novembre"],
        &["december", "dec", "diciembre", "dezembro", "dicembre"],
    ];
    MONTHS
        .iter()
        .position(|names| names.contains(&key))
        .map(|i| i as u8 + 1)
}
