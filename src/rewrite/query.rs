//! Search-attribute names inside visibility queries.
//!
//! ListWorkflowExecutions, CountWorkflowExecutions, ScanWorkflowExecutions, ListSchedules and batch
//! operations carry a *list filter*, Temporal's SQL-like `WHERE` clause:
//! `CustomerId = 'abc' AND (`Custom Attr` > 5 OR WorkflowType STARTS_WITH "x") ORDER BY StartTime`.
//! Search attributes appear in it as column names, and those are what [`translate_query`] renames,
//! copying every other byte (whitespace, case, quotes, comments) exactly.
//!
//! ## The grammar followed
//! Temporal parses the filter with `github.com/temporalio/sqlparser` (a fork of Vitess's MySQL
//! parser) as `select * from table1 where <query>`. The tokenizer here mirrors that lexer, so a
//! byte counts as part of a name here exactly when Temporal would read it so:
//! - whitespace is space, `\t`, `\r`, `\n`;
//! - string literals are `'…'` or `"…"`, with backslash escapes and a doubled quote standing for
//!   one (`'it''s'`); never edited. `x'…'` and `b'…'` (hex and bit literals) too;
//! - comments (`-- …`, `# …`, `// …` to the end of the line; `/* … */`) are skipped by Temporal
//!   and copied untouched here. `/*! … */` is refused: a MySQL "executable" comment, whose content
//!   Temporal *does* parse;
//! - bare identifiers are `[A-Za-z_@][A-Za-z0-9_@]*`. A dot is not part of an identifier: `a.b` is
//!   the qualified column `a` `.` `b` (blanks and comments may surround the dot). Temporal resolves
//!   a qualified column by its printed form minus backquotes, i.e. as the one search-attribute
//!   name `"a.b"`; so a dotted chain is looked up as its joined name, never part by part (renaming
//!   `a` inside `a.b` would not rename what Temporal resolves);
//! - backquoted identifiers are `` `…` ``, the name being what is between the backquotes. A doubled
//!   backquote inside one is refused: Temporal strips every backquote from a column name, so such a
//!   name resolves to something other than what it spells;
//! - `@@…` (system variables), `:name` (bind variables), numbers (with any identifier bytes stuck
//!   to them, which Temporal rejects) and operators are copied untouched;
//! - reserved keywords (`AND`, `OR`, `NOT`, `IN`, `IS`, `NULL`, `BETWEEN`, `LIKE`, `STARTS_WITH`,
//!   `ORDER`, `BY`, `GROUP`, `LIMIT`, `ASC`, `DESC`, …, matched case-insensitively) are never
//!   looked up, so no map can rewrite them. Non-reserved keywords (`Status`, `Date`, `Text`, …) are
//!   valid bare column names in Temporal's grammar, and are looked up like any other name.
//!
//! Names are case-sensitive, as in Temporal. An unterminated literal, identifier or comment is an
//! error, never a guess.
//!
//! ## Writing the new name
//! A backquoted name stays backquoted. A bare name (or dotted chain) is replaced by the new name,
//! bare when it reads back as the same name — each dot-separated part an identifier, not a
//! reserved keyword — and backquoted otherwise (`CustomerId` → `` `Customer Id` ``), which Temporal
//! resolves to the same name. Translating back then gives the backquoted form of the original: the
//! round trip is byte-exact when, for each mapped pair, both names can be bare or neither can.

/// Longest query translated; Temporal's own limits on request sizes are far below this.
pub(crate) const MAX_QUERY_LEN: usize = 1 << 20;

/// Why a query could not be translated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("query is {len} bytes, over the limit of {limit}")]
    TooLong { len: usize, limit: usize },
    #[error("unterminated string literal starting at byte {offset}")]
    UnterminatedString { offset: usize },
    #[error("unterminated backquoted identifier starting at byte {offset}")]
    UnterminatedIdentifier { offset: usize },
    #[error("unterminated comment starting at byte {offset}")]
    UnterminatedComment { offset: usize },
    #[error("executable comment (/*! ... */) at byte {offset} is not supported")]
    ExecutableComment { offset: usize },
    #[error("backquoted identifier at byte {offset} contains a backquote")]
    BackquoteInIdentifier { offset: usize },
    #[error("search attribute name {name:?} cannot be written into the query at byte {offset}")]
    Unrepresentable { name: String, offset: usize },
    /// The lookup refused a name (see [`Lookup::Refuse`]).
    #[error("search attribute {name:?} at byte {offset} is not known here")]
    Refused { name: String, offset: usize },
}

/// What to do with one name of a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup<'m> {
    Keep,
    Rename(&'m str),
    /// The query is refused ([`QueryError::Refused`]): the name is one its sender cannot use.
    Refuse,
}

/// Translates every search-attribute identifier in `query` found in `names` (from → to). Returns
/// Ok(None) when nothing changed (the caller then forwards the original bytes untouched).
///
/// `names` is asked about each bare or backquoted identifier (qualified names joined with `.`),
/// never about literals, comments or reserved keywords; a name it maps to itself is left alone.
#[cfg(any(test, feature = "internals"))]
pub fn translate_query<'m>(
    query: &str,
    names: &dyn Fn(&str) -> Option<&'m str>,
) -> Result<Option<String>, QueryError> {
    translate_query_with(query, &|name| {
        names(name).map_or(Lookup::Keep, Lookup::Rename)
    })
}

/// [`translate_query`] with a lookup that may also refuse a name: the first refused name (in
/// query order) fails the translation, unless the lexer fails first (before the name, or on the
/// token after it, read to see whether a dotted name goes on).
pub fn translate_query_with<'m>(
    query: &str,
    names: &dyn Fn(&str) -> Lookup<'m>,
) -> Result<Option<String>, QueryError> {
    if query.len() > MAX_QUERY_LEN {
        return Err(QueryError::TooLong {
            len: query.len(),
            limit: MAX_QUERY_LEN,
        });
    }
    let lexer = Lexer {
        text: query,
        bytes: query.as_bytes(),
    };
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut pos = 0;
    while let Some(first) = lexer.token(pos)? {
        pos = first.end;
        if !first.kind.is_name() {
            continue;
        }
        // A qualified name: parts joined by dots, with blanks or comments allowed around each dot.
        let mut last = first;
        let mut joined: Option<String> = None;
        while let Some(dot) = lexer.non_blank(last.end)?.filter(|t| t.kind == Kind::Dot) {
            let Some(part) = lexer.non_blank(dot.end)?.filter(|t| t.kind.is_name()) else {
                break;
            };
            let joined = joined.get_or_insert_with(|| lexer.name(first).to_owned());
            joined.push('.');
            joined.push_str(lexer.name(part));
            last = part;
        }
        pos = last.end;
        let name = match &joined {
            Some(joined) => joined.as_str(),
            None if first.kind == Kind::Bare && is_keyword(lexer.name(first)) => continue,
            None => lexer.name(first),
        };
        let to = match names(name) {
            Lookup::Keep => continue,
            Lookup::Rename(to) if to == name => continue,
            Lookup::Rename(to) => to,
            Lookup::Refuse => {
                return Err(QueryError::Refused {
                    name: name.to_owned(),
                    offset: first.start,
                })
            }
        };
        let backquoted = joined.is_none() && first.kind == Kind::Backquoted;
        let out = out.get_or_insert_with(|| String::with_capacity(query.len() + 16));
        // Token boundaries are ASCII bytes (or the ends), hence char boundaries.
        out.push_str(&query[copied..first.start]);
        write_name(out, to, backquoted, &lexer, first.start, last.end)?;
        copied = last.end;
    }
    Ok(out.map(|mut out| {
        out.push_str(&query[copied..]);
        out
    }))
}

/// Appends `name` as it must be written in place of `start..end`.
fn write_name(
    out: &mut String,
    name: &str,
    backquoted: bool,
    lexer: &Lexer<'_>,
    start: usize,
    end: usize,
) -> Result<(), QueryError> {
    let before = start
        .checked_sub(1)
        .and_then(|i| lexer.bytes.get(i))
        .copied();
    let after = lexer.bytes.get(end).copied();
    if !backquoted && can_be_bare(name, after) {
        out.push_str(name);
        return Ok(());
    }
    // A backquote in the name cannot be written (Temporal strips them all), and a backquoted name
    // right next to another backquote would run into it.
    if name.is_empty()
        || name.contains('`')
        || (!backquoted && (before == Some(b'`') || after == Some(b'`')))
    {
        return Err(QueryError::Unrepresentable {
            name: name.to_owned(),
            offset: start,
        });
    }
    out.push('`');
    out.push_str(name);
    out.push('`');
    Ok(())
}

/// Whether `name` reads back as the same name when written bare before the byte `after`.
fn can_be_bare(name: &str, after: Option<u8>) -> bool {
    let plain = |part: &str| {
        let bytes = part.as_bytes();
        matches!(bytes.first(), Some(&b) if is_ident_start(b))
            && bytes.iter().all(|&b| is_ident_byte(b))
            && !part.starts_with("@@")
            && !is_keyword(part)
    };
    let last = name.rsplit('.').next().unwrap_or(name);
    // `x'..'` and `b'..'` are literals.
    let literal_prefix = matches!(last, "x" | "X" | "b" | "B") && after == Some(b'\'');
    name.split('.').all(plain) && !literal_prefix
}

/// What a token is, as far as translation cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `[A-Za-z_@][A-Za-z0-9_@]*`.
    Bare,
    /// `` `name` `` with a non-empty name.
    Backquoted,
    /// A `.` that does not start a number.
    Dot,
    /// Whitespace or a comment: skipped by Temporal's parser, so may sit inside a qualified name.
    Blank,
    /// Everything else: literals, numbers, operators, variables, bytes Temporal rejects.
    Other,
}

impl Kind {
    fn is_name(self) -> bool {
        matches!(self, Kind::Bare | Kind::Backquoted)
    }
}

#[derive(Debug, Clone, Copy)]
struct Token {
    kind: Kind,
    start: usize,
    end: usize,
}

struct Lexer<'q> {
    text: &'q str,
    bytes: &'q [u8],
}

impl<'q> Lexer<'q> {
    fn at(&self, i: usize) -> Option<u8> {
        self.bytes.get(i).copied()
    }

    /// The name a `Bare` or `Backquoted` token stands for.
    fn name(&self, token: Token) -> &'q str {
        match token.kind {
            Kind::Backquoted => &self.text[token.start + 1..token.end - 1],
            _ => &self.text[token.start..token.end],
        }
    }

    /// The first token at or after `pos` that is not blank.
    fn non_blank(&self, mut pos: usize) -> Result<Option<Token>, QueryError> {
        while let Some(token) = self.token(pos)? {
            if token.kind != Kind::Blank {
                return Ok(Some(token));
            }
            pos = token.end;
        }
        Ok(None)
    }

    /// The token starting at `pos`, None at the end.
    fn token(&self, pos: usize) -> Result<Option<Token>, QueryError> {
        let Some(c) = self.at(pos) else {
            return Ok(None);
        };
        let next = self.at(pos + 1);
        let (kind, end) = match c {
            b' ' | b'\t' | b'\r' | b'\n' => (
                Kind::Blank,
                self.skip_while(pos, |b| matches!(b, b' ' | b'\t' | b'\r' | b'\n')),
            ),
            b'\'' | b'"' => (Kind::Other, self.string(pos)?),
            b'x' | b'X' | b'b' | b'B' if next == Some(b'\'') => {
                (Kind::Other, self.string(pos + 1)?)
            }
            b'`' => self.backquoted(pos)?,
            b'#' => (Kind::Blank, self.line_comment(pos)),
            b'-' | b'/' if next == Some(c) => (Kind::Blank, self.line_comment(pos)),
            b'/' if next == Some(b'*') => (Kind::Blank, self.block_comment(pos)?),
            b'.' if next.is_some_and(|b| b.is_ascii_digit()) => (Kind::Other, self.number(pos)),
            b'.' => (Kind::Dot, pos + 1),
            b'0'..=b'9' => (Kind::Other, self.number(pos)),
            b':' => (Kind::Other, self.bind_variable(pos)),
            // A system variable, which may run over dots and quotes.
            b'@' if next == Some(b'@') => (
                Kind::Other,
                self.skip_while(pos + 2, |b| {
                    is_ident_byte(b) || matches!(b, b'.' | b'\'' | b'"' | b'`')
                }),
            ),
            _ if is_ident_start(c) => (Kind::Bare, self.skip_while(pos + 1, is_ident_byte)),
            // One character, whole (continuation bytes of UTF-8 are 0b10xx_xxxx).
            _ => (Kind::Other, self.skip_while(pos + 1, |b| b & 0xc0 == 0x80)),
        };
        Ok(Some(Token {
            kind,
            start: pos,
            end,
        }))
    }

    /// The first index at or after `i` whose byte does not satisfy `keep`.
    fn skip_while(&self, mut i: usize, keep: impl Fn(u8) -> bool) -> usize {
        while self.at(i).is_some_and(&keep) {
            i += 1;
        }
        i
    }

    /// A literal whose quote is at `open`; returns its end.
    fn string(&self, open: usize) -> Result<usize, QueryError> {
        let quote = self.at(open);
        let mut i = open + 1;
        loop {
            match self.at(i) {
                None => return Err(QueryError::UnterminatedString { offset: open }),
                Some(b'\\') if i + 1 < self.bytes.len() => i += 2,
                Some(b'\\') => return Err(QueryError::UnterminatedString { offset: open }),
                Some(b) if Some(b) == quote => {
                    if self.at(i + 1) == quote {
                        i += 2;
                    } else {
                        return Ok(i + 1);
                    }
                }
                Some(_) => i += 1,
            }
        }
    }

    fn backquoted(&self, open: usize) -> Result<(Kind, usize), QueryError> {
        let mut i = open + 1;
        loop {
            match self.at(i) {
                None => return Err(QueryError::UnterminatedIdentifier { offset: open }),
                Some(b'`') if self.at(i + 1) == Some(b'`') => {
                    return Err(QueryError::BackquoteInIdentifier { offset: open })
                }
                // An empty name is an error for Temporal; nothing to translate.
                Some(b'`') if i == open + 1 => return Ok((Kind::Other, i + 1)),
                Some(b'`') => return Ok((Kind::Backquoted, i + 1)),
                Some(_) => i += 1,
            }
        }
    }

    /// To the end of the line, newline included.
    fn line_comment(&self, start: usize) -> usize {
        let end = self.skip_while(start, |b| b != b'\n');
        end + usize::from(end < self.bytes.len())
    }

    fn block_comment(&self, start: usize) -> Result<usize, QueryError> {
        if self.at(start + 2) == Some(b'!') {
            return Err(QueryError::ExecutableComment { offset: start });
        }
        match self.text.get(start + 2..).and_then(|rest| rest.find("*/")) {
            Some(at) => Ok(start + 2 + at + 2),
            None => Err(QueryError::UnterminatedComment { offset: start }),
        }
    }

    /// A number: `0x1F`, `12`, `1.5`, `.5`, `1e-3`, plus any identifier bytes stuck to it (which
    /// make Temporal reject the query, and must not be read as a name here).
    fn number(&self, start: usize) -> usize {
        let digits = |i| self.skip_while(i, |b| b.is_ascii_digit());
        let mut i = start;
        if self.at(i) == Some(b'0') && matches!(self.at(i + 1), Some(b'x' | b'X')) {
            i = self.skip_while(i + 2, |b| b.is_ascii_hexdigit());
        } else {
            i = digits(i);
            if self.at(i) == Some(b'.') {
                i = digits(i + 1);
            }
            if matches!(self.at(i), Some(b'e' | b'E')) {
                i += 1;
                if matches!(self.at(i), Some(b'+' | b'-')) {
                    i += 1;
                }
                i = digits(i);
            }
        }
        self.skip_while(i, is_ident_byte)
    }

    /// `:name` or `::name` (names may contain dots).
    fn bind_variable(&self, start: usize) -> usize {
        let mut i = start + 1;
        if self.at(i) == Some(b':') {
            i += 1;
        }
        if self.at(i).is_some_and(is_ident_start) {
            i = self.skip_while(i, |b| is_ident_byte(b) || b == b'.');
        }
        i
    }
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b == b'@'
}

fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'@'
}

/// Words the parser never takes for a bare column name: the grammar's reserved keywords, plus
/// keywords that are neither reserved nor allowed as names. Lowercase, sorted bytewise.
const KEYWORDS: &[&str] = &[
    "_binary",
    "add",
    "all",
    "alter",
    "analyze",
    "and",
    "as",
    "asc",
    "auto_increment",
    "between",
    "binary",
    "boolean",
    "by",
    "case",
    "cast",
    "collate",
    "column",
    "constraint",
    "convert",
    "create",
    "cross",
    "current_date",
    "current_time",
    "current_timestamp",
    "database",
    "databases",
    "default",
    "delete",
    "desc",
    "describe",
    "distinct",
    "div",
    "drop",
    "else",
    "end",
    "escape",
    "exists",
    "explain",
    "extended",
    "false",
    "for",
    "force",
    "from",
    "full",
    "group",
    "group_concat",
    "having",
    "if",
    "ignore",
    "in",
    "index",
    "inner",
    "insert",
    "interval",
    "into",
    "is",
    "join",
    "key",
    "left",
    "like",
    "limit",
    "localtime",
    "localtimestamp",
    "lock",
    "match",
    "maxvalue",
    "mod",
    "natural",
    "next",
    "not",
    "null",
    "on",
    "or",
    "order",
    "outer",
    "processlist",
    "regexp",
    "rename",
    "replace",
    "right",
    "rlike",
    "schema",
    "select",
    "separator",
    "set",
    "show",
    "sql_cache",
    "sql_no_cache",
    "starts_with",
    "straight_join",
    "stream",
    "substr",
    "substring",
    "table",
    "tables",
    "then",
    "to",
    "true",
    "union",
    "unique",
    "update",
    "use",
    "using",
    "utc_date",
    "utc_time",
    "utc_timestamp",
    "values",
    "when",
    "where",
];

fn is_keyword(word: &str) -> bool {
    KEYWORDS
        .binary_search_by(|k| {
            let lower = word.bytes().map(|b| b.to_ascii_lowercase());
            k.bytes().cmp(lower)
        })
        .is_ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use proptest::prelude::*;

    /// The pairs used throughout: a bijection whose names all read back the same written bare (or,
    /// for the one with a space, backquoted), including a swap and a qualified name.
    const PAIRS: &[(&str, &str)] = &[
        ("CustomerId", "OrderCustomer"),
        ("Alpha", "Beta"),
        ("Beta", "Alpha"),
        ("Region", "Zone"),
        ("Custom Attr", "Other Attr"),
        ("Meta.Owner", "MetaOwner"),
        ("Date", "CreatedDate"),
    ];

    fn forward(name: &str) -> Option<&'static str> {
        PAIRS
            .iter()
            .find(|(from, _)| *from == name)
            .map(|(_, to)| *to)
    }

    fn inverse(name: &str) -> Option<&'static str> {
        PAIRS
            .iter()
            .find(|(_, to)| *to == name)
            .map(|(from, _)| *from)
    }

    fn tr(query: &str) -> Result<Option<String>, QueryError> {
        translate_query(query, &forward)
    }

    /// The translation, or the input when unchanged.
    fn apply(query: &str, names: &dyn Fn(&str) -> Option<&'static str>) -> String {
        match translate_query(query, names) {
            Ok(Some(out)) => out,
            Ok(None) => query.to_owned(),
            Err(err) => panic!("{query:?}: {err}"),
        }
    }

    fn fwd(query: &str) -> String {
        apply(query, &forward)
    }

    #[test]
    fn keywords_are_sorted_and_lowercase() {
        assert!(KEYWORDS.windows(2).all(|w| w[0] < w[1]));
        assert!(KEYWORDS
            .iter()
            .all(|k| k.bytes().all(|b| !b.is_ascii_uppercase())));
        for word in [
            "AND",
            "and",
            "Order",
            "STARTS_WITH",
            "starts_with",
            "_BINARY",
            "null",
        ] {
            assert!(is_keyword(word), "{word}");
        }
        for word in [
            "CustomerId",
            "Status",
            "Date",
            "ands",
            "an",
            "",
            "value",
            "zzz",
        ] {
            assert!(!is_keyword(word), "{word}");
        }
    }

    #[test]
    fn documented_examples() {
        let cases = [
            (
                concat!(
                    "CustomerId = 'abc' AND WorkflowType = \"order\" AND `Custom Attr` > 5 ",
                    "ORDER BY StartTime DESC",
                ),
                concat!(
                    "OrderCustomer = 'abc' AND WorkflowType = \"order\" AND `Other Attr` > 5 ",
                    "ORDER BY StartTime DESC",
                ),
            ),
            (
                concat!(
                    "ExecutionStatus = 'Running' AND (CustomerId IN ('a', \"b\\\"c\") OR ",
                    "CustomerId IS NULL) AND StartTime BETWEEN '2024-01-01' AND '2024-02-01'",
                ),
                concat!(
                    "ExecutionStatus = 'Running' AND (OrderCustomer IN ('a', \"b\\\"c\") OR ",
                    "OrderCustomer IS NULL) AND StartTime BETWEEN '2024-01-01' AND '2024-02-01'",
                ),
            ),
            (
                concat!(
                    "CustomerId STARTS_WITH 'x' and ",
                    "customerid = 'not translated: names are case-sensitive'",
                ),
                concat!(
                    "OrderCustomer STARTS_WITH 'x' and ",
                    "customerid = 'not translated: names are case-sensitive'",
                ),
            ),
        ];
        for (query, expected) in cases {
            assert_eq!(tr(query), Ok(Some(expected.to_owned())), "{query}");
            assert_eq!(apply(expected, &inverse), query);
        }
    }

    #[test]
    fn quoted_values_stay() {
        for (query, expected) in [
            ("CustomerId = 'CustomerId'", "OrderCustomer = 'CustomerId'"),
            (
                "CustomerId = \"CustomerId\"",
                "OrderCustomer = \"CustomerId\"",
            ),
            ("Region = 'it''s CustomerId'", "Zone = 'it''s CustomerId'"),
            ("Region = 'a\\'CustomerId\\''", "Zone = 'a\\'CustomerId\\''"),
            (
                "Region = \"say \"\"CustomerId\"\"\"",
                "Zone = \"say \"\"CustomerId\"\"\"",
            ),
            (
                "Region = '`CustomerId`' OR Region = '-- CustomerId'",
                "Zone = '`CustomerId`' OR Zone = '-- CustomerId'",
            ),
            (
                "Region = x'CustomerId' OR Region = b'Alpha'",
                "Zone = x'CustomerId' OR Zone = b'Alpha'",
            ),
        ] {
            assert_eq!(fwd(query), expected, "{query}");
        }
    }

    #[test]
    fn backquoted_names() {
        assert_eq!(fwd("`CustomerId` = 'x'"), "`OrderCustomer` = 'x'");
        assert_eq!(fwd("`Custom Attr` = 1"), "`Other Attr` = 1");
        assert_eq!(fwd("`Custom  Attr` = 1"), "`Custom  Attr` = 1");
        assert_eq!(fwd("`Meta.Owner` = 1"), "`MetaOwner` = 1");
        // A keyword in backquotes is a name.
        let order = |n: &str| (n == "Order").then_some("Purchase");
        assert_eq!(
            apply("`Order` = 1 ORDER BY `Order`", &order),
            "`Purchase` = 1 ORDER BY `Purchase`"
        );
    }

    #[test]
    fn adjacent_punctuation() {
        assert_eq!(fwd("(CustomerId)"), "(OrderCustomer)");
        assert_eq!(fwd("CustomerId='x'"), "OrderCustomer='x'");
        assert_eq!(fwd("CustomerId!=\"x\""), "OrderCustomer!=\"x\"");
        assert_eq!(fwd("(CustomerId,Region)"), "(OrderCustomer,Zone)");
        assert_eq!(fwd("CustomerId<>1"), "OrderCustomer<>1");
        assert_eq!(fwd("\tCustomerId\n=\r\n1 "), "\tOrderCustomer\n=\r\n1 ");
        assert_eq!(fwd("é CustomerId"), "é OrderCustomer");
    }

    #[test]
    fn swap_is_simultaneous() {
        assert_eq!(fwd("Alpha = 1 OR Beta = 2"), "Beta = 1 OR Alpha = 2");
    }

    #[test]
    fn unknown_names_and_keywords_untouched() {
        for query in [
            "",
            "   ",
            "WorkflowType = 'x'",
            "customerid = 1 AND CUSTOMERID = 2 AND CustomerIdX = 3 AND x_CustomerId = 4",
            "ORDER BY StartTime",
            "@@CustomerId = 1",
            ":CustomerId",
            "5CustomerId",
            "1e5 = 0x1F",
            "CustomerId.Sub = 1",
            "Sub.CustomerId = 1",
            "`` = 1",
        ] {
            assert_eq!(tr(query), Ok(None), "{query}");
        }
        // No map can rewrite a reserved keyword.
        let everything = |_: &str| Some("Renamed");
        assert_eq!(
            apply("NOT X IN (1) AND y is null ORDER BY z desc", &everything),
            "NOT Renamed IN (1) AND Renamed is null ORDER BY Renamed desc"
        );
    }

    #[test]
    fn non_reserved_keywords_are_names() {
        assert_eq!(fwd("Date > '2024-01-01'"), "CreatedDate > '2024-01-01'");
    }

    #[test]
    fn comments_are_skipped() {
        assert_eq!(
            fwd("CustomerId = 1 -- CustomerId 'x\nAND Region = 2"),
            "OrderCustomer = 1 -- CustomerId 'x\nAND Zone = 2"
        );
        assert_eq!(fwd("CustomerId = 1 # it's"), "OrderCustomer = 1 # it's");
        assert_eq!(fwd("CustomerId = 1 // it's"), "OrderCustomer = 1 // it's");
        assert_eq!(
            fwd("/* CustomerId's */ CustomerId = 1"),
            "/* CustomerId's */ OrderCustomer = 1"
        );
        assert_eq!(fwd("CustomerId--x"), "OrderCustomer--x");
    }

    #[test]
    fn qualified_names_are_one_name() {
        assert_eq!(fwd("Meta.Owner = 'x'"), "MetaOwner = 'x'");
        assert_eq!(fwd("Meta . /* c */ Owner = 'x'"), "MetaOwner = 'x'");
        assert_eq!(fwd("`Meta`.`Owner` = 'x'"), "MetaOwner = 'x'");
        assert_eq!(apply("MetaOwner = 1", &inverse), "Meta.Owner = 1");
        // A part on its own is not looked up.
        let parts = |n: &str| (n == "Meta" || n == "Owner").then_some("Zzz");
        assert_eq!(translate_query("Meta.Owner = 1", &parts), Ok(None));
        // A trailing dot ends the name; a number after a dot is a number.
        assert_eq!(fwd("CustomerId. = 1"), "OrderCustomer. = 1");
        assert_eq!(fwd("CustomerId.5"), "OrderCustomer.5");
    }

    #[test]
    fn names_needing_backquotes() {
        let spaced = |n: &str| match n {
            "CustomerId" => Some("Customer Id"),
            "Region" => Some("order"),
            "x1" => Some("x"),
            "Num" => Some("1st"),
            _ => None,
        };
        assert_eq!(
            apply("CustomerId = 1 AND Region = 2", &spaced),
            "`Customer Id` = 1 AND `order` = 2"
        );
        assert_eq!(apply("x1'ab' x1 = 1 Num", &spaced), "`x`'ab' x = 1 `1st`");
        assert_eq!(
            translate_query("`a`CustomerId", &spaced),
            Err(QueryError::Unrepresentable {
                name: "Customer Id".into(),
                offset: 3
            })
        );
        let tick = |_: &str| Some("a`b");
        assert_eq!(
            translate_query("x = 1", &tick),
            Err(QueryError::Unrepresentable {
                name: "a`b".into(),
                offset: 0
            })
        );
        let empty = |_: &str| Some("");
        assert!(translate_query("x = 1", &empty).is_err());
    }

    #[test]
    fn identity_and_empty_maps_change_nothing() {
        let query = "CustomerId = 'a' AND `Custom Attr` = 1 AND Meta . Owner = 2 AND Date IS NULL";
        let identity = |n: &str| {
            PAIRS
                .iter()
                .find(|(from, _)| *from == n)
                .map(|(from, _)| *from)
        };
        assert_eq!(translate_query(query, &identity), Ok(None));
        assert_eq!(translate_query(query, &|_| None), Ok(None));
    }

    /// The forward map, refusing the names only its range has (`OrderCustomer`, `Zone`, …): how a
    /// translating listener treats upstream-side names in its clients' queries.
    fn refusing(name: &str) -> Lookup<'static> {
        match forward(name) {
            Some(to) => Lookup::Rename(to),
            None if inverse(name).is_some() => Lookup::Refuse,
            None => Lookup::Keep,
        }
    }

    #[test]
    fn refused_names_fail_the_query_with_the_first_one() {
        let refused = |query: &str| translate_query_with(query, &refusing);
        assert_eq!(
            refused("CustomerId = 1 AND Zone = 2 AND OrderCustomer = 3"),
            Err(QueryError::Refused {
                name: "Zone".into(),
                offset: 19
            })
        );
        assert_eq!(
            refused("`Other Attr` = 1"),
            Err(QueryError::Refused {
                name: "Other Attr".into(),
                offset: 0
            })
        );
        assert_eq!(
            refused("MetaOwner = 1"),
            Err(QueryError::Refused {
                name: "MetaOwner".into(),
                offset: 0
            })
        );
        // Only names are judged: literals, comments and parts of qualified names are not names.
        assert_eq!(
            refused("Region = 'OrderCustomer' /* Zone */ AND Zone.x = 1 -- Zone"),
            Ok(Some(
                "Zone = 'OrderCustomer' /* Zone */ AND Zone.x = 1 -- Zone".into()
            ))
        );
        // A swap refuses nothing: both names are client-side names.
        assert_eq!(refused("Alpha = Beta"), Ok(Some("Beta = Alpha".into())));
        // A syntax error before the refused name wins.
        assert_eq!(
            refused("x = 'open AND Zone = 1"),
            Err(QueryError::UnterminatedString { offset: 4 })
        );
    }

    #[test]
    fn borrowed_map_closure() {
        let map: std::collections::HashMap<String, String> =
            [("CustomerId".to_owned(), "OrderCustomer".to_owned())]
                .into_iter()
                .collect();
        let out = translate_query("CustomerId = 1", &|n| map.get(n).map(String::as_str));
        assert_eq!(out, Ok(Some("OrderCustomer = 1".to_owned())));
    }

    #[test]
    fn errors() {
        use QueryError::*;
        let cases: &[(&str, QueryError)] = &[
            ("CustomerId = 'abc", UnterminatedString { offset: 13 }),
            ("CustomerId = \"abc'", UnterminatedString { offset: 13 }),
            ("CustomerId = 'abc\\'", UnterminatedString { offset: 13 }),
            ("CustomerId = 'abc\\", UnterminatedString { offset: 13 }),
            ("CustomerId = 'it''", UnterminatedString { offset: 13 }),
            ("x'12", UnterminatedString { offset: 1 }),
            ("`Custom Attr = 1", UnterminatedIdentifier { offset: 0 }),
            ("a = 1 AND `", UnterminatedIdentifier { offset: 10 }),
            ("`a``b` = 1", BackquoteInIdentifier { offset: 0 }),
            ("a = 1 /* x", UnterminatedComment { offset: 6 }),
            ("a = 1 /*/", UnterminatedComment { offset: 6 }),
            ("/*! CustomerId = 1 */", ExecutableComment { offset: 0 }),
        ];
        for (query, err) in cases {
            assert_eq!(tr(query).as_ref(), Err(err), "{query}");
            // Errors do not depend on the map.
            assert_eq!(
                translate_query(query, &|_| None).as_ref(),
                Err(err),
                "{query}"
            );
        }
        let long = "a".repeat(MAX_QUERY_LEN + 1);
        assert_eq!(
            tr(&long),
            Err(TooLong {
                len: MAX_QUERY_LEN + 1,
                limit: MAX_QUERY_LEN
            })
        );
        assert!(tr(&"a ".repeat(MAX_QUERY_LEN / 2)).is_ok());
    }

    // ---- property tests: queries from a small grammar ----

    /// One piece of a generated query, with what its translation must be.
    #[derive(Debug, Clone)]
    enum Piece {
        /// A bare name (possibly qualified).
        Name(&'static str),
        /// A backquoted name.
        Backquoted(&'static str),
        /// Copied as is: a literal, keyword, number or operator.
        Fixed(String),
        /// Operators and parentheses: may touch their neighbours.
        Punct(&'static str),
    }

    impl Piece {
        fn text(&self) -> String {
            match self {
                Piece::Name(n) => (*n).to_owned(),
                Piece::Backquoted(n) => format!("`{n}`"),
                Piece::Fixed(t) => t.clone(),
                Piece::Punct(p) => (*p).to_owned(),
            }
        }

        fn translated(&self) -> String {
            match self {
                Piece::Name(n) => forward(n).unwrap_or(n).to_owned(),
                Piece::Backquoted(n) => format!("`{}`", forward(n).unwrap_or(n)),
                other => other.text(),
            }
        }
    }

    /// Names from the map's domain (never names only in its range, so the inverse restores them)
    /// and names neither side knows.
    const BARE: &[&str] = &[
        "CustomerId",
        "Alpha",
        "Beta",
        "Region",
        "Meta.Owner",
        "Date",
        "WorkflowType",
        "StartTime",
        "customerid",
        "CUSTOMERID",
        "CustomerIdX",
        "x_CustomerId",
        "CustomerId.Sub",
        "Meta",
        "Owner",
        "_under",
        "@at",
        "Status",
        "Order2",
    ];
    const BACKQUOTED: &[&str] = &[
        "Custom Attr",
        "CustomerId",
        "Alpha",
        "Unmapped Thing",
        "ORDER",
        "Meta.Owner",
        "é ü",
    ];
    const KEYWORD_PIECES: &[&str] = &[
        "AND",
        "or",
        "Not",
        "IN",
        "BETWEEN",
        "is",
        "NULL",
        "ORDER BY",
        "asc",
        "DESC",
        "LIKE",
        "STARTS_WITH",
        "not starts_with",
        "Group By",
        "LIMIT",
        "true",
    ];
    const NUMBERS: &[&str] = &["5", "3.14", "-1", "0x1F", "1e10", ".5", "1e-3"];
    const PUNCT: &[&str] = &["=", "!=", "<>", "<=", ">=", "<", ">", "(", ")", ","];
    const SEPARATORS: &[&str] = &[
        " ",
        "\t",
        "\n",
        "  ",
        "",
        " /* CustomerId 'x */ ",
        " -- Alpha \"\n",
        "\r\n",
    ];
    /// Fragments of literal contents; `Q` is the literal's own quote, `O` the other one.
    const FRAGMENTS: &[&str] = &[
        "CustomerId",
        "Alpha",
        "`Custom Attr`",
        " ",
        "AND",
        "O",
        "QQ",
        "\\Q",
        "\\\\",
        "\\n",
        "-- x",
        "/* y",
        "#",
        "é",
        "x",
        "Meta.Owner",
        "\\O",
    ];

    fn literal() -> impl Strategy<Value = Piece> {
        (
            any::<bool>(),
            prop::collection::vec(prop::sample::select(FRAGMENTS), 0..6),
        )
            .prop_map(|(double, frags)| {
                let (q, o) = if double { ('"', '\'') } else { ('\'', '"') };
                let mut s = String::from(q);
                for frag in frags {
                    s.push_str(
                        &frag
                            .replace('Q', &q.to_string())
                            .replace('O', &o.to_string()),
                    );
                }
                s.push(q);
                Piece::Fixed(s)
            })
    }

    fn piece() -> impl Strategy<Value = Piece> {
        prop_oneof![
            3 => prop::sample::select(BARE).prop_map(Piece::Name),
            1 => prop::sample::select(BACKQUOTED).prop_map(Piece::Backquoted),
            2 => literal(),
            2 => prop::sample::select(KEYWORD_PIECES).prop_map(|k| Piece::Fixed(k.to_owned())),
            1 => prop::sample::select(NUMBERS).prop_map(|n| Piece::Fixed(n.to_owned())),
            2 => prop::sample::select(PUNCT).prop_map(Piece::Punct),
        ]
    }

    /// A generated query, with what must come of it.
    #[derive(Debug, Clone)]
    struct Generated {
        query: String,
        /// Its translation by `forward`.
        expected: String,
        /// Its string literals, in order.
        literals: Vec<String>,
        /// The names `translate_query` must ask about, in order.
        names: Vec<String>,
    }

    fn query() -> impl Strategy<Value = Generated> {
        let pieces = prop::collection::vec((piece(), prop::sample::select(SEPARATORS)), 0..24);
        pieces.prop_map(|pieces| {
            let mut g = Generated {
                query: String::new(),
                expected: String::new(),
                literals: Vec::new(),
                names: Vec::new(),
            };
            let mut previous_punct = true;
            for (piece, sep) in pieces {
                let punct = matches!(piece, Piece::Punct(_));
                // Only punctuation may touch a neighbour: two words or literals would merge.
                let sep = if sep.is_empty() && !punct && !previous_punct {
                    " "
                } else {
                    sep
                };
                g.query.push_str(sep);
                g.expected.push_str(sep);
                g.query.push_str(&piece.text());
                g.expected.push_str(&piece.translated());
                match &piece {
                    Piece::Name(n) | Piece::Backquoted(n) => g.names.push((*n).to_owned()),
                    Piece::Fixed(t) if t.starts_with(['\'', '"']) => g.literals.push(t.clone()),
                    _ => {}
                }
                previous_punct = punct;
            }
            g
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn translation_matches_the_grammar(g in query()) {
            let out = translate_query(&g.query, &forward)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(out.is_some(), g.expected != g.query);
            prop_assert_eq!(out.unwrap_or_else(|| g.query.clone()), g.expected);
        }

        #[test]
        fn inverse_restores_the_original(g in query()) {
            let there = apply(&g.query, &forward);
            prop_assert_eq!(apply(&there, &inverse), g.query);
        }

        #[test]
        fn exactly_the_names_are_looked_up(g in query()) {
            let asked = std::cell::RefCell::new(Vec::new());
            let record = |name: &str| -> Option<&'static str> {
                asked.borrow_mut().push(name.to_owned());
                None
            };
            prop_assert_eq!(translate_query(&g.query, &record), Ok(None));
            prop_assert_eq!(asked.into_inner(), g.names);
        }

        #[test]
        fn literals_are_never_altered(g in query()) {
            let out = apply(&g.query, &|_| Some("Renamed"));
            let mut rest = out.as_str();
            for literal in &g.literals {
                let at = rest.find(literal.as_str());
                prop_assert!(at.is_some(), "{} missing from {}", literal, out);
                rest = &rest[at.unwrap_or(0) + literal.len()..];
            }
        }

        #[test]
        fn empty_map_changes_nothing(g in query()) {
            prop_assert_eq!(translate_query(&g.query, &|_| None), Ok(None));
        }

        #[test]
        fn refusal_is_decided_by_the_names_asked_about(g in query()) {
            // Generated queries are well formed: refused exactly when one of their names is, and
            // then for the first such name; otherwise the same translation as without refusals.
            // Generated names come from the map's domain, so refuse some of those.
            let lookup = |name: &str| match name {
                "Region" | "Unmapped Thing" | "Status" => Lookup::Refuse,
                _ => forward(name).map_or(Lookup::Keep, Lookup::Rename),
            };
            let first = g.names.iter().find(|n| lookup(n) == Lookup::Refuse);
            let out = translate_query_with(&g.query, &lookup);
            match first {
                Some(name) => prop_assert!(
                    matches!(&out, Err(QueryError::Refused { name: n, .. }) if n == name),
                    "{:?}", out
                ),
                None => prop_assert_eq!(out, translate_query(&g.query, &forward)),
            }
        }

        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,64}") {
            let _ = translate_query(&text, &forward);
        }
    }
}
