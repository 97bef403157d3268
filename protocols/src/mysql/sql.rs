//! SQL text for events: the resource ("SELECT users") and the scrubbed request text.
//!
//! A small lexer over the captured head of the statement (bounded by the caller); no
//! allocation, no recursion. Secrets scrubbed from the text: string literals after
//! `IDENTIFIED [WITH plugin] BY|AS|USING [PASSWORD]` (and `REPLACE` in the same clause),
//! and after `...PASSWORD =` / `...PASSWORD(` (`SET PASSWORD = '..'`, `PASSWORD('..')`,
//! `MASTER_PASSWORD = '..'`), all case-insensitive. Unterminated literals (a head cut in
//! the middle of one) are scrubbed as well.

use crate::event::{RequestText, Resource};
use crate::text::Text;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tok {
    /// Whitespace run.
    Space,
    /// Comment (`-- `, `#`, `/* */`); an executable `/*!NNNNN` opener is also a comment so
    /// that its content is lexed as SQL.
    Comment,
    /// Keyword, identifier, number, `@@var`.
    Word,
    /// `identifier` in backquotes.
    Backquoted,
    /// '...' or "..." (terminated or not).
    Literal,
    Punct(u8),
}

struct Lexer<'a> {
    s: &'a [u8],
    pos: usize,
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b == b'@' || b >= 0x80
}

impl<'a> Lexer<'a> {
    fn new(s: &'a [u8]) -> Self {
        Lexer { s, pos: 0 }
    }

    fn at(&self, i: usize) -> Option<u8> {
        self.s.get(i).copied()
    }

    /// Next token and its bytes.
    fn next_tok(&mut self) -> Option<(Tok, &'a [u8])> {
        let start = self.pos;
        let b = self.at(start)?;
        let next = self.at(start.saturating_add(1));
        let tok = if b.is_ascii_whitespace() {
            self.pos = self.skip_while(start, |b| b.is_ascii_whitespace());
            Tok::Space
        } else if b == b'#' || (b == b'-' && next == Some(b'-') && self.dash_comment(start)) {
            self.pos = self.skip_while(start, |b| b != b'\n');
            Tok::Comment
        } else if b == b'/' && next == Some(b'*') {
            let body = start.saturating_add(2);
            if self.at(body) == Some(b'!') {
                // Executable comment: skip "/*!" and the version digits only.
                self.pos = self.skip_while(body.saturating_add(1), |b| b.is_ascii_digit());
            } else {
                self.pos = self.block_comment_end(body);
            }
            Tok::Comment
        } else if b == b'\'' || b == b'"' {
            self.pos = self.literal_end(start.saturating_add(1), b);
            Tok::Literal
        } else if b == b'`' {
            self.pos = self.literal_end(start.saturating_add(1), b);
            Tok::Backquoted
        } else if is_word_byte(b) {
            self.pos = self.skip_while(start, is_word_byte);
            Tok::Word
        } else {
            self.pos = start.saturating_add(1);
            Tok::Punct(b)
        };
        let bytes = self.s.get(start..self.pos).unwrap_or(&[]);
        Some((tok, bytes))
    }

    /// Next token that is not whitespace or a comment.
    fn next_sig(&mut self) -> Option<(Tok, &'a [u8])> {
        loop {
            match self.next_tok()? {
                (Tok::Space | Tok::Comment, _) => continue,
                t => return Some(t),
            }
        }
    }

    fn skip_while(&self, from: usize, f: impl Fn(u8) -> bool) -> usize {
        let rest = self.s.get(from..).unwrap_or(&[]);
        let n = rest.iter().position(|&b| !f(b)).unwrap_or(rest.len());
        from.saturating_add(n)
    }

    /// `--` starts a comment only when followed by whitespace or the end.
    fn dash_comment(&self, start: usize) -> bool {
        !matches!(self.at(start.saturating_add(2)), Some(b) if !b.is_ascii_whitespace())
    }

    fn block_comment_end(&self, from: usize) -> usize {
        let rest = self.s.get(from..).unwrap_or(&[]);
        match rest.windows(2).position(|w| w == b"*/") {
            Some(p) => from.saturating_add(p).saturating_add(2),
            None => self.s.len(),
        }
    }

    /// End (exclusive) of a quoted token opened just before `from`: backslash escapes and
    /// doubled quotes; the end of input when unterminated.
    fn literal_end(&self, from: usize, quote: u8) -> usize {
        let mut i = from;
        while let Some(b) = self.at(i) {
            if b == b'\\' && quote != b'`' {
                i = i.saturating_add(2);
            } else if b == quote {
                if self.at(i.saturating_add(1)) == Some(quote) {
                    i = i.saturating_add(2);
                } else {
                    return i.saturating_add(1);
                }
            } else {
                i = i.saturating_add(1);
            }
        }
        self.s.len()
    }
}

fn eq_ci(a: &[u8], b: &str) -> bool {
    a.eq_ignore_ascii_case(b.as_bytes())
}

fn ends_with_ci(a: &[u8], b: &str) -> bool {
    let b = b.as_bytes();
    a.len() >= b.len()
        && a.get(a.len().saturating_sub(b.len())..)
            .is_some_and(|t| t.eq_ignore_ascii_case(b))
}

/// Append an identifier token's name (backquotes stripped).
fn push_ident<const N: usize>(out: &mut Text<N>, tok: Tok, bytes: &[u8]) {
    let name = match tok {
        Tok::Backquoted => {
            let inner = bytes.get(1..).unwrap_or(&[]);
            inner.strip_suffix(b"`").unwrap_or(inner)
        }
        _ => bytes,
    };
    out.push_bytes_lossy(name);
}

/// Read `name` or `schema.name` (quotes stripped) into `out`; false if no identifier.
fn read_table<const N: usize>(lx: &mut Lexer<'_>, out: &mut Text<N>) -> bool {
    let Some((tok, bytes)) = lx.next_sig() else {
        return false;
    };
    if !matches!(tok, Tok::Word | Tok::Backquoted) {
        return false;
    }
    out.push_char(' ');
    push_ident(out, tok, bytes);
    // Up to two further ".name" parts, no whitespace in between.
    for _ in 0..2 {
        let save = lx.pos;
        match (lx.next_tok(), lx.next_tok()) {
            (Some((Tok::Punct(b'.'), _)), Some((t @ (Tok::Word | Tok::Backquoted), b))) => {
                out.push_char('.');
                push_ident(out, t, b);
            }
            _ => {
                lx.pos = save;
                break;
            }
        }
    }
    true
}

/// Skip words in `skip` (case-insensitive); returns after them (the lexer is left before
/// the first word not in the list).
fn skip_words(lx: &mut Lexer<'_>, skip: &[&str]) {
    loop {
        let save = lx.pos;
        match lx.next_sig() {
            Some((Tok::Word, w)) if skip.iter().any(|s| eq_ci(w, s)) => continue,
            _ => {
                lx.pos = save;
                return;
            }
        }
    }
}

/// Find `keyword` (a word, case-insensitive) and read the table after it. Prefers the
/// first occurrence at parenthesis depth 0 followed by an identifier.
fn table_after_keyword<const N: usize>(sql: &[u8], from: usize, keyword: &str, out: &mut Text<N>) {
    for want_top in [true, false] {
        let mut lx = Lexer { s: sql, pos: from };
        let mut depth = 0u32;
        while let Some((tok, bytes)) = lx.next_tok() {
            match tok {
                Tok::Punct(b'(') => depth = depth.saturating_add(1),
                Tok::Punct(b')') => depth = depth.saturating_sub(1),
                Tok::Punct(b';') if depth == 0 => break,
                Tok::Word if eq_ci(bytes, keyword) && (!want_top || depth == 0) => {
                    let mut tmp = Text::<N>::new();
                    let mut l2 = Lexer {
                        s: sql,
                        pos: lx.pos,
                    };
                    if read_table(&mut l2, &mut tmp) {
                        out.push_str(tmp.as_str());
                        return;
                    }
                }
                _ => {}
            }
        }
    }
}

/// The resource of a COM_QUERY / COM_STMT_PREPARE: SQL verb uppercased and the first table.
pub fn resource(sql: &[u8]) -> Resource {
    let mut out = Resource::new();
    let mut lx = Lexer::new(sql);
    let verb = loop {
        match lx.next_sig() {
            Some((Tok::Punct(b'('), _)) => continue,
            Some((Tok::Word, w)) => break w,
            _ => {
                out.push_str("COM_QUERY");
                return out;
            }
        }
    };
    for &b in verb.iter().take(32) {
        out.push_char(char::from(b.to_ascii_uppercase()));
    }
    let after = lx.pos;
    let v = |s: &str| eq_ci(verb, s);
    if v("SELECT") || v("DELETE") {
        table_after_keyword(sql, after, "FROM", &mut out);
    } else if v("INSERT") || v("REPLACE") {
        skip_words(
            &mut lx,
            &["LOW_PRIORITY", "DELAYED", "HIGH_PRIORITY", "IGNORE", "INTO"],
        );
        read_table(&mut lx, &mut out);
    } else if v("UPDATE") {
        skip_words(&mut lx, &["LOW_PRIORITY", "IGNORE"]);
        read_table(&mut lx, &mut out);
    } else if v("CREATE") || v("DROP") || v("ALTER") || v("TRUNCATE") || v("RENAME") {
        let objects = [
            "TABLE",
            "TABLES",
            "DATABASE",
            "SCHEMA",
            "VIEW",
            "INDEX",
            "PROCEDURE",
            "FUNCTION",
            "TRIGGER",
            "EVENT",
            "TABLESPACE",
        ];
        // The object keyword among the next few words (TEMPORARY, OR REPLACE, UNIQUE ...).
        for _ in 0..6 {
            match lx.next_sig() {
                Some((Tok::Word, w)) if objects.iter().any(|o| eq_ci(w, o)) => {
                    skip_words(&mut lx, &["IF", "NOT", "EXISTS"]);
                    read_table(&mut lx, &mut out);
                    break;
                }
                Some((Tok::Word, _)) => continue,
                _ => break,
            }
        }
        if v("TRUNCATE") && out.as_str() == "TRUNCATE" {
            let mut lx = Lexer { s: sql, pos: after };
            read_table(&mut lx, &mut out);
        }
    } else if v("DESC") || v("DESCRIBE") || v("CALL") || v("USE") {
        read_table(&mut lx, &mut out);
    }
    out
}

/// Append SQL bytes, with whitespace control characters shown as spaces.
fn push_sql<const N: usize>(out: &mut Text<N>, bytes: &[u8]) {
    for chunk in bytes.split(|&b| matches!(b, b'\r' | b'\n' | b'\t' | 0x0b | 0x0c)) {
        if !out.is_empty() && chunk.as_ptr() != bytes.as_ptr() {
            out.push_char(' ');
        }
        out.push_bytes_lossy(chunk);
    }
}

/// The SQL text for records: whitespace runs collapsed, secrets replaced by `'?'`.
pub fn scrubbed_text(sql: &[u8]) -> RequestText {
    let mut out = RequestText::new();
    let mut lx = Lexer::new(sql);
    let mut identified = false;
    let mut password = false;
    let mut scrub_next = false;
    let mut space = false;
    while let Some((tok, bytes)) = lx.next_tok() {
        if out.is_cut() {
            break;
        }
        if tok == Tok::Space {
            space = !out.is_empty();
            continue;
        }
        if space {
            out.push_char(' ');
            space = false;
        }
        match tok {
            Tok::Space => {}
            Tok::Comment => push_sql(&mut out, bytes),
            Tok::Word => {
                if eq_ci(bytes, "IDENTIFIED") {
                    identified = true;
                } else if identified
                    && (eq_ci(bytes, "BY")
                        || eq_ci(bytes, "AS")
                        || eq_ci(bytes, "USING")
                        || eq_ci(bytes, "REPLACE"))
                {
                    scrub_next = true;
                }
                if ends_with_ci(bytes, "PASSWORD") {
                    password = true;
                }
                push_sql(&mut out, bytes);
            }
            Tok::Punct(p) => {
                match p {
                    b'=' | b'(' if password => scrub_next = true,
                    b',' | b')' => {
                        scrub_next = false;
                        password = false;
                    }
                    b';' => {
                        scrub_next = false;
                        password = false;
                        identified = false;
                    }
                    _ => {}
                }
                out.push_char(char::from(p));
            }
            Tok::Literal if scrub_next => {
                let q = char::from(*bytes.first().unwrap_or(&b'\''));
                out.push_char(q);
                out.push_char('?');
                out.push_char(q);
                scrub_next = false;
                password = false;
            }
            Tok::Literal | Tok::Backquoted => push_sql(&mut out, bytes),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> String {
        resource(s.as_bytes()).as_str().to_string()
    }
    fn t(s: &str) -> String {
        scrubbed_text(s.as_bytes()).as_str().to_string()
    }

    #[test]
    fn resources() {
        assert_eq!(r("select @@version_comment limit 1"), "SELECT");
        assert_eq!(r("SELECT * FROM users WHERE id = 1"), "SELECT users");
        assert_eq!(
            r("  /* hint */ select a from `db`.`t1` join t2"),
            "SELECT db.t1"
        );
        assert_eq!(r("-- c\nselect (select 1 from x) from y"), "SELECT y");
        assert_eq!(
            r("SELECT * FROM `controller` WHERE name = ?"),
            "SELECT controller"
        );
        assert_eq!(r("insert into orders values (1)"), "INSERT orders");
        assert_eq!(r("INSERT IGNORE INTO `o`(a) VALUES (1)"), "INSERT o");
        assert_eq!(r("replace t values (1)"), "REPLACE t");
        assert_eq!(r("update t set a=1"), "UPDATE t");
        assert_eq!(r("delete from t where a=1"), "DELETE t");
        assert_eq!(r("create table foo (a int)"), "CREATE foo");
        assert_eq!(
            r("CREATE TEMPORARY TABLE IF NOT EXISTS foo (a int)"),
            "CREATE foo"
        );
        assert_eq!(r("drop table if exists foo"), "DROP foo");
        assert_eq!(r("ALTER TABLE t ADD c int"), "ALTER t");
        assert_eq!(r("truncate t"), "TRUNCATE t");
        assert_eq!(r("show databases"), "SHOW");
        assert_eq!(r("SET NAMES utf8"), "SET");
        assert_eq!(r("begin"), "BEGIN");
        assert_eq!(r("commit"), "COMMIT");
        assert_eq!(r("/*!40101 SET NAMES utf8 */"), "SET");
        assert_eq!(
            r("(SELECT a FROM t1) UNION (SELECT a FROM t2)"),
            "SELECT t1"
        );
        assert_eq!(r(""), "COM_QUERY");
        assert_eq!(r("desc t"), "DESC t");
        assert_eq!(r("SELECT 'FROM x' FROM y"), "SELECT y");
    }

    #[test]
    fn scrubs_secrets() {
        assert_eq!(
            t("CREATE USER 'bob'@'%' IDENTIFIED BY 's3cret'"),
            "CREATE USER 'bob'@'%' IDENTIFIED BY '?'"
        );
        assert_eq!(
            t("alter user bob identified with mysql_native_password by \"pw\""),
            "alter user bob identified with mysql_native_password by \"?\""
        );
        assert_eq!(
            t("SET PASSWORD FOR 'u'@'h' = 'x y'"),
            "SET PASSWORD FOR 'u'@'h' = '?'"
        );
        assert_eq!(
            t("set password = PASSWORD('it''s')"),
            "set password = PASSWORD('?')"
        );
        assert_eq!(t("SELECT PASSWORD('abc')"), "SELECT PASSWORD('?')");
        assert_eq!(
            t("GRANT ALL ON *.* TO 'a'@'h' IDENTIFIED BY PASSWORD '*ABCDEF'"),
            "GRANT ALL ON *.* TO 'a'@'h' IDENTIFIED BY PASSWORD '?'"
        );
        assert_eq!(
            t("CHANGE MASTER TO MASTER_USER='r', MASTER_PASSWORD='x'"),
            "CHANGE MASTER TO MASTER_USER='r', MASTER_PASSWORD='?'"
        );
        assert_eq!(
            t("ALTER USER u IDENTIFIED BY 'new' REPLACE 'old'"),
            "ALTER USER u IDENTIFIED BY '?' REPLACE '?'"
        );
        // Head cut inside the literal: still scrubbed.
        assert_eq!(
            t("CREATE USER u IDENTIFIED BY 'abc"),
            "CREATE USER u IDENTIFIED BY '?'"
        );
        assert_eq!(
            t("select  *\n from\tt where a = 'x'"),
            "select * from t where a = 'x'"
        );
        assert_eq!(t("select 'a\\'b' from t"), "select 'a\\'b' from t");
    }
}
