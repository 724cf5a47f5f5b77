//! National-prefix patterns compiled to a digit trie, so the phone fast path can tell what the
//! parser's `national_prefix_for_parsing` regex matches at the start of a number without
//! running the regex (the `phonenumber` crate runs every metadata regex through one global
//! mutex-guarded LRU cache keyed by the pattern's source, which costs microseconds a call).
//!
//! Only a small, loop-free subset of regex syntax is compiled: digits, `\d`, classes of digits
//! and ranges (`[1-357]`), groups (`(…)`, `(?:…)`), `|`, the greedy quantifiers `?`, `{n}` and
//! `{n,m}`, and `$`. Whitespace is ignored (the crate compiles the metadata in `x` mode).
//! Anything else (or a language too large to expand) is not compiled and the caller keeps
//! asking the parser.
//!
//! Such a pattern matches finitely many strings. The regex engine's leftmost-first semantics
//! pick, among the matches starting at the beginning of the input, the one a backtracking
//! matcher finds first; enumerating the pattern's paths in backtracking order (alternatives
//! left to right, `?` trying the item before skipping it, a sequence's first item varying
//! slowest) gives every path a rank, and the match is the lowest-ranked path whose string is a
//! prefix of the input (and, for a path through `$`, the whole input).

/// Most paths a pattern may have, and most expanded strings, before we give up on it.
const MAX_PATHS: usize = 4096;
const MAX_STRINGS: usize = 8192;

#[derive(Debug, Clone)]
enum Node {
    /// A set of digits, bit `d` for digit `d`.
    Class(u16),
    Seq(Vec<Node>),
    Alt(Vec<Node>),
    /// Greedy `?`.
    Opt(Box<Node>),
    /// Capture group number `n` (from 1).
    Group(Box<Node>, u32),
    /// `$`.
    End,
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    groups: u32,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        let yes = self.peek() == Some(c);
        if yes {
            self.i += 1;
        }
        yes
    }

    fn alt(&mut self) -> Option<Node> {
        let mut alternatives = vec![self.seq()?];
        while self.eat(b'|') {
            alternatives.push(self.seq()?);
        }
        Some(if alternatives.len() == 1 {
            alternatives.pop()?
        } else {
            Node::Alt(alternatives)
        })
    }

    fn seq(&mut self) -> Option<Node> {
        let mut items = Vec::new();
        while let Some(c) = self.peek() {
            if c == b'|' || c == b')' {
                break;
            }
            let atom = self.atom()?;
            items.push(self.quantified(atom)?);
        }
        Some(Node::Seq(items))
    }

    fn atom(&mut self) -> Option<Node> {
        let c = self.peek()?;
        self.i += 1;
        match c {
            b'0'..=b'9' => Some(Node::Class(1 << (c - b'0'))),
            b'\\' => self.eat(b'd').then_some(Node::Class(0x3ff)),
            b'$' => Some(Node::End),
            b'[' => {
                let mut set = 0u16;
                loop {
                    let c = self.peek()?;
                    self.i += 1;
                    match c {
                        b']' if set != 0 => return Some(Node::Class(set)),
                        b'0'..=b'9' => {
                            if self.peek() == Some(b'-')
                                && self.s.get(self.i + 1).is_some_and(u8::is_ascii_digit)
                            {
                                let hi = self.s[self.i + 1];
                                if hi < c {
                                    return None;
                                }
                                for d in c..=hi {
                                    set |= 1 << (d - b'0');
                                }
                                self.i += 2;
                            } else {
                                set |= 1 << (c - b'0');
                            }
                        }
                        _ => return None,
                    }
                }
            }
            b'(' => {
                let group = if self.eat(b'?') {
                    if !self.eat(b':') {
                        return None;
                    }
                    None
                } else {
                    self.groups += 1;
                    Some(self.groups)
                };
                let inner = self.alt()?;
                if !self.eat(b')') {
                    return None;
                }
                Some(match group {
                    Some(n) => Node::Group(Box::new(inner), n),
                    None => inner,
                })
            }
            _ => None,
        }
    }

    fn quantified(&mut self, atom: Node) -> Option<Node> {
        let node = match self.peek() {
            Some(b'?') => {
                self.i += 1;
                Node::Opt(Box::new(atom))
            }
            Some(b'{') => {
                self.i += 1;
                let min = self.number()?;
                let max = if self.eat(b',') { self.number()? } else { min };
                if !self.eat(b'}') || max < min || max > 16 {
                    return None;
                }
                // a{2,4} = a a (a (a)?)?
                let mut tail = Node::Seq(Vec::new());
                for _ in min..max {
                    tail = Node::Opt(Box::new(Node::Seq(vec![atom.clone(), tail])));
                }
                let mut items = vec![atom; min];
                items.push(tail);
                Node::Seq(items)
            }
            _ => return Some(atom),
        };
        // Lazy (`??`) or possessive quantifiers, and quantified quantifiers: not ours.
        match self.peek() {
            Some(b'?' | b'+' | b'*' | b'{') => None,
            _ => Some(node),
        }
    }

    fn number(&mut self) -> Option<usize> {
        let start = self.i;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
        std::str::from_utf8(&self.s[start..self.i])
            .ok()?
            .parse()
            .ok()
    }
}

/// One way through a pattern: the digit classes it consumes, whether it ends at `$`, and the
/// capture groups it goes through.
#[derive(Debug, Clone, Default)]
struct Path {
    classes: Vec<u16>,
    at_end: bool,
    groups: u64,
}

impl Path {
    /// `None` when nothing can follow: a path that consumes a digit after `$` never matches.
    fn then(&self, next: &Path) -> Option<Path> {
        if self.at_end && !next.classes.is_empty() {
            return None;
        }
        let mut classes = self.classes.clone();
        classes.extend_from_slice(&next.classes);
        Some(Path {
            classes,
            at_end: self.at_end || next.at_end,
            groups: self.groups | next.groups,
        })
    }
}

/// The paths of `node` in backtracking order; `None` if there are too many.
fn paths(node: &Node) -> Option<Vec<Path>> {
    let ps = match node {
        Node::Class(set) => vec![Path {
            classes: vec![*set],
            ..Path::default()
        }],
        Node::End => vec![Path {
            at_end: true,
            ..Path::default()
        }],
        Node::Seq(items) => {
            let mut acc = vec![Path::default()];
            for item in items {
                let next = paths(item)?;
                let mut joined = Vec::new();
                for a in &acc {
                    for b in &next {
                        joined.extend(a.then(b));
                    }
                    if joined.len() > MAX_PATHS {
                        return None;
                    }
                }
                acc = joined;
            }
            acc
        }
        Node::Alt(alternatives) => {
            let mut all = Vec::new();
            for a in alternatives {
                all.extend(paths(a)?);
            }
            all
        }
        Node::Opt(inner) => {
            let mut all = paths(inner)?;
            all.push(Path::default());
            all
        }
        Node::Group(inner, n) => {
            if *n >= 64 {
                return None;
            }
            let mut all = paths(inner)?;
            for p in &mut all {
                p.groups |= 1 << n;
            }
            all
        }
    };
    (ps.len() <= MAX_PATHS).then_some(ps)
}

/// What the pattern's preferred match at the start of a number is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Match {
    /// How many digits it covers.
    pub(super) len: usize,
    /// Whether the pattern's last capture group took part (the group the parser looks at to
    /// decide between stripping the match and applying the transform rule). A pattern without
    /// groups counts its whole match as that group, as the parser does.
    pub(super) last_group: bool,
}

#[derive(Debug, Clone, Copy)]
struct Term {
    rank: u32,
    last_group: bool,
}

#[derive(Debug, Clone, Default)]
struct TrieNode {
    /// Child index per digit; 0 is none (the root is never a child).
    next: [u32; 10],
    /// The best path ending here.
    term: Option<Term>,
    /// The best path ending here through `$`: counts only at the end of the input.
    term_at_end: Option<Term>,
}

/// A compiled national-prefix pattern.
#[derive(Clone)]
pub(super) struct PrefixTrie {
    nodes: Vec<TrieNode>,
}

impl std::fmt::Debug for PrefixTrie {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PrefixTrie({} nodes)", self.nodes.len())
    }
}

impl PrefixTrie {
    /// `None` when the pattern is outside the subset we compile, or too large.
    pub(super) fn compile(pattern: &str) -> Option<PrefixTrie> {
        let source: Vec<u8> = pattern
            .bytes()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        let mut parser = Parser {
            s: &source,
            i: 0,
            groups: 0,
        };
        let node = parser.alt()?;
        if parser.i != source.len() {
            return None;
        }
        let last = parser.groups;
        let mut trie = PrefixTrie {
            nodes: vec![TrieNode::default()],
        };
        let mut strings = 0usize;
        for (rank, path) in paths(&node)?.iter().enumerate() {
            let term = Term {
                rank: u32::try_from(rank).ok()?,
                last_group: last == 0 || path.groups & (1 << last) != 0,
            };
            trie.insert(0, &path.classes, path.at_end, term, &mut strings)?;
        }
        Some(trie)
    }

    fn insert(
        &mut self,
        at: usize,
        classes: &[u16],
        at_end: bool,
        term: Term,
        strings: &mut usize,
    ) -> Option<()> {
        let Some((&set, rest)) = classes.split_first() else {
            *strings += 1;
            if *strings > MAX_STRINGS {
                return None;
            }
            let node = &mut self.nodes[at];
            let slot = if at_end {
                &mut node.term_at_end
            } else {
                &mut node.term
            };
            if slot.is_none_or(|t| term.rank < t.rank) {
                *slot = Some(term);
            }
            return Some(());
        };
        for d in 0..10 {
            if set & (1 << d) == 0 {
                continue;
            }
            let child = match self.nodes[at].next[d] {
                0 => {
                    let child = self.nodes.len();
                    self.nodes.push(TrieNode::default());
                    self.nodes[at].next[d] = u32::try_from(child).ok()?;
                    child
                }
                child => child as usize,
            };
            self.insert(child, rest, at_end, term, strings)?;
        }
        Some(())
    }

    /// The pattern's preferred match at the start of `digits` (ASCII digits), as the regex
    /// engine would report it; `None` when no match starts there.
    pub(super) fn match_start(&self, digits: &str) -> Option<Match> {
        let b = digits.as_bytes();
        let mut best: Option<(Term, usize)> = None;
        let mut at = 0usize;
        let mut depth = 0usize;
        loop {
            let node = &self.nodes[at];
            let candidates = [node.term, node.term_at_end.filter(|_| depth == b.len())];
            for t in candidates.into_iter().flatten() {
                if best.is_none_or(|(b, _)| t.rank < b.rank) {
                    best = Some((t, depth));
                }
            }
            let Some(&c) = b.get(depth) else { break };
            if !c.is_ascii_digit() {
                break;
            }
            match node.next[usize::from(c - b'0')] {
                0 => break,
                next => at = next as usize,
            }
            depth += 1;
        }
        best.map(|(t, len)| Match {
            len,
            last_group: t.last_group,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, digits: &str) -> Option<(usize, bool)> {
        PrefixTrie::compile(pattern)
            .unwrap()
            .match_start(digits)
            .map(|m| (m.len, m.last_group))
    }

    #[test]
    fn the_preferred_match_follows_backtracking_order() {
        // Greedy `?` and alternatives left to right.
        assert_eq!(m("0?(?:(11|2)15)?", "0111523"), Some((5, true)));
        assert_eq!(m("0?(?:(11|2)15)?", "01123"), Some((1, false)));
        assert_eq!(m("0?(?:(11|2)15)?", "1123"), Some((0, false)));
        assert_eq!(m("0?(?:(11|2)15)?", "21599"), Some((3, true)));
        // The first alternative wins even when a later one is longer.
        assert_eq!(m("1|12", "123"), Some((1, true)));
        assert_eq!(m("12|1", "123"), Some((2, true)));
        // No match at the start.
        assert_eq!(m("1|2", "345"), None);
        // `$`: a local number of exactly this length.
        assert_eq!(m(r"([2-9]\d{2})$|1", "234"), Some((3, true)));
        assert_eq!(m(r"([2-9]\d{2})$|1", "2345"), None);
        assert_eq!(m(r"([2-9]\d{2})$|1", "1234"), Some((1, false)));
        // Quantifier ranges are greedy.
        assert_eq!(m(r"0\d{1,3}", "012345"), Some((4, true)));
        assert_eq!(m(r"0\d{1,3}", "01"), Some((2, true)));
        // Whitespace is ignored, as in the metadata.
        assert_eq!(m(" 0 ? ( 1 5 ) ", "0159"), Some((3, true)));
    }

    #[test]
    fn only_the_loop_free_subset_compiles() {
        for unsupported in [
            "0*", "1+", "a", r"\s", "(?i)1", "1??", "[^0]", r"\d{2,}", "(1", "1)", "[]", "1{3,2}",
        ] {
            assert!(PrefixTrie::compile(unsupported).is_none(), "{unsupported}");
        }
        assert!(PrefixTrie::compile(r"\d{16}").is_none(), "too large");
    }
}
