#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

use super::*;
use crate::Direction::{ToClient as SC, ToServer as CS};

const PROTOCOL_41: u32 = 0x200;
const SECURE_CONNECTION: u32 = 0x8000;
const PLUGIN_AUTH: u32 = 0x0008_0000;
const MULTI_RESULTS: u32 = 0x0002_0000;
const BASE: u32 = PROTOCOL_41 | SECURE_CONNECTION | PLUGIN_AUTH | MULTI_RESULTS | 0x1 | 0x8;

// ----- byte builders (from the protocol documentation) -------------------------------

fn pkt(seq: u8, payload: &[u8]) -> Vec<u8> {
    let n = payload.len() as u32;
    let mut v = vec![n as u8, (n >> 8) as u8, (n >> 16) as u8, seq];
    v.extend_from_slice(payload);
    v
}

fn lenenc_str(v: &mut Vec<u8>, s: &[u8]) {
    assert!(s.len() < 251);
    v.push(s.len() as u8);
    v.extend_from_slice(s);
}

fn greeting(caps: u32) -> Vec<u8> {
    let mut p = vec![0x0a];
    p.extend_from_slice(b"8.0.36\0");
    p.extend_from_slice(&7u32.to_le_bytes()); // connection id
    p.extend_from_slice(b"abcdefgh\0"); // auth data part 1 + filler
    p.extend_from_slice(&(caps as u16).to_le_bytes());
    p.push(0xff); // charset
    p.extend_from_slice(&2u16.to_le_bytes()); // status
    p.extend_from_slice(&((caps >> 16) as u16).to_le_bytes());
    p.push(21);
    p.extend_from_slice(&[0; 10]);
    p.extend_from_slice(b"ijklmnopqrst\0");
    p.extend_from_slice(b"caching_sha2_password\0");
    pkt(0, &p)
}

const USER: &[u8] = b"alice_secret_user";
const AUTH: &[u8] = b"AUTHRESPONSE-SECRET!";
const DB: &[u8] = b"secretdb";

fn login(caps: u32) -> Vec<u8> {
    let mut p = caps.to_le_bytes().to_vec();
    p.extend_from_slice(&0x0100_0000u32.to_le_bytes());
    p.push(0xff);
    p.extend_from_slice(&[0; 23]);
    p.extend_from_slice(USER);
    p.push(0);
    lenenc_str(&mut p, AUTH);
    p.extend_from_slice(DB);
    p.push(0);
    p.extend_from_slice(b"caching_sha2_password\0");
    pkt(1, &p)
}

fn ok(seq: u8, status: u16) -> Vec<u8> {
    let s = status.to_le_bytes();
    pkt(seq, &[0x00, 0x00, 0x00, s[0], s[1], 0x00, 0x00])
}

fn ok_fe(seq: u8, status: u16) -> Vec<u8> {
    let s = status.to_le_bytes();
    pkt(seq, &[0xFE, 0x00, 0x00, s[0], s[1], 0x00, 0x00])
}

fn eof(seq: u8, status: u16) -> Vec<u8> {
    let s = status.to_le_bytes();
    pkt(seq, &[0xFE, 0x00, 0x00, s[0], s[1]])
}

fn err(seq: u8, code: u16, msg: &str) -> Vec<u8> {
    let mut p = vec![0xFF];
    p.extend_from_slice(&code.to_le_bytes());
    p.extend_from_slice(b"#42S02");
    p.extend_from_slice(msg.as_bytes());
    pkt(seq, &p)
}

fn coldef(seq: u8, name: &str) -> Vec<u8> {
    let mut p = Vec::new();
    for s in [
        &b"def"[..],
        b"test",
        b"users",
        b"users",
        name.as_bytes(),
        name.as_bytes(),
    ] {
        lenenc_str(&mut p, s);
    }
    p.push(0x0c);
    p.extend_from_slice(&[
        0x21, 0x00, 0xff, 0, 0, 0, 0xfd, 0x00, 0x00, 0x00, 0x00, 0x00,
    ]);
    pkt(seq, &p)
}

fn text_row(seq: u8, vals: &[&str]) -> Vec<u8> {
    let mut p = Vec::new();
    for v in vals {
        lenenc_str(&mut p, v.as_bytes());
    }
    pkt(seq, &p)
}

fn cmd(c: u8, body: &[u8]) -> Vec<u8> {
    let mut p = vec![c];
    p.extend_from_slice(body);
    pkt(0, &p)
}

fn query(sql: &str) -> Vec<u8> {
    cmd(COM_QUERY, sql.as_bytes())
}

/// A text result set starting at sequence id `seq`: column count, definitions, EOF (EOF
/// mode only), rows, then EOF (EOF mode) or OK with 0xFE header (DEPRECATE_EOF).
fn result_set(seq: u8, cols: usize, rows: usize, eof_mode: bool, status: u16) -> (Vec<u8>, u8) {
    let mut v = pkt(seq, &[cols as u8]);
    let mut s = seq.wrapping_add(1);
    for i in 0..cols {
        v.extend(coldef(s, &format!("c{i}")));
        s = s.wrapping_add(1);
    }
    if eof_mode {
        v.extend(eof(s, 0));
        s = s.wrapping_add(1);
    }
    for r in 0..rows {
        let vals: Vec<String> = (0..cols).map(|c| format!("r{r}c{c}")).collect();
        let refs: Vec<&str> = vals.iter().map(|x| x.as_str()).collect();
        v.extend(text_row(s, &refs));
        s = s.wrapping_add(1);
    }
    if eof_mode {
        v.extend(eof(s, status));
    } else {
        v.extend(ok_fe(s, status));
    }
    (v, s.wrapping_add(1))
}

// ----- the caller simulated: per-direction buffer of unconsumed bytes, re-fed ----------

struct Caller {
    s: MysqlSession,
    buf: [Vec<u8>; 2],
    out: Events,
    max_seen: usize,
}

impl Caller {
    fn new(mid: bool, limits: &Limits) -> Self {
        Caller {
            s: MysqlSession::new(mid, limits),
            buf: [Vec::new(), Vec::new()],
            out: Vec::new(),
            max_seen: 0,
        }
    }
    fn feed(&mut self, dir: Direction, bytes: &[u8]) {
        let b = &mut self.buf[dir.index()];
        b.extend_from_slice(bytes);
        let n = self.s.feed(dir, b, &mut self.out);
        assert!(n <= b.len());
        b.drain(..n);
        self.max_seen = self.max_seen.max(b.len());
    }
}

fn run_chunks(mid: bool, script: &[(Direction, Vec<u8>)], chunk: usize) -> Events {
    let mut c = Caller::new(mid, &Limits::default());
    for (dir, bytes) in script {
        for piece in bytes.chunks(chunk.max(1)) {
            c.feed(*dir, piece);
        }
    }
    c.out
}

/// Every message split at every byte boundary, and fed byte by byte, gives the same events
/// as feeding each message whole.
fn run_all_splits(mid: bool, script: &[(Direction, Vec<u8>)]) -> Events {
    let whole = run_chunks(mid, script, usize::MAX);
    assert_eq!(run_chunks(mid, script, 1), whole, "byte by byte");
    for (i, (_, msg)) in script.iter().enumerate() {
        for k in 1..msg.len() {
            let mut c = Caller::new(mid, &Limits::default());
            for (j, (dir, bytes)) in script.iter().enumerate() {
                if i == j {
                    c.feed(*dir, &bytes[..k]);
                    c.feed(*dir, &bytes[k..]);
                } else {
                    c.feed(*dir, bytes);
                }
            }
            assert_eq!(c.out, whole, "message {i} split at {k}");
        }
    }
    whole
}

fn req(resource: &str, text: &str, bytes: usize) -> Event {
    Event::Request(Request {
        resource: Resource::from_str_lossy(resource),
        text: RequestText::from_str_lossy(text),
        id: None,
        bytes: bytes as u64,
    })
}

fn resp(code: &str, kind: &str, error: bool, bytes: usize) -> Event {
    Event::Response(Response {
        code: Code::from_str_lossy(code),
        error,
        kind: Code::from_str_lossy(kind),
        id: None,
        bytes: bytes as u64,
    })
}

fn login_script(caps: u32) -> Vec<(Direction, Vec<u8>)> {
    vec![(SC, greeting(caps)), (CS, login(caps)), (SC, ok(2, 2))]
}

fn assert_no_login_data(events: &Events) {
    let dump = format!("{events:?}");
    for secret in [USER, AUTH, DB] {
        assert!(
            !dump.contains(std::str::from_utf8(secret).unwrap()),
            "{dump}"
        );
    }
}

// ----- tests ---------------------------------------------------------------------------

#[test]
fn login_then_query_with_text_result_set_eof_mode() {
    let mut script = login_script(BASE);
    let q = query("SELECT * FROM users");
    let (rs, _) = result_set(1, 2, 3, true, 0x0002);
    let (qlen, rslen) = (q.len(), rs.len());
    script.push((CS, q));
    script.push((SC, rs));
    let ev = run_all_splits(false, &script);
    assert_eq!(
        ev,
        vec![
            req("SELECT users", "SELECT * FROM users", qlen),
            resp("OK", "resultset", false, rslen)
        ]
    );
    assert_no_login_data(&ev);
}

#[test]
fn query_with_text_result_set_deprecate_eof_mode() {
    let caps = BASE | CLIENT_DEPRECATE_EOF;
    let mut script = login_script(caps);
    let q = query("select id from `db`.`orders` where x = 1");
    let (rs, _) = result_set(1, 3, 2, false, 0x0002);
    let (qlen, rslen) = (q.len(), rs.len());
    script.push((CS, q));
    script.push((SC, rs));
    // An empty result set: columns, then straight the OK (0xFE) terminator.
    let q2 = query("SELECT a FROM empty_t");
    let (rs2, _) = result_set(1, 1, 0, false, 0x0002);
    let (q2len, rs2len) = (q2.len(), rs2.len());
    script.push((CS, q2));
    script.push((SC, rs2));
    let ev = run_all_splits(false, &script);
    assert_eq!(
        ev,
        vec![
            req(
                "SELECT db.orders",
                "select id from `db`.`orders` where x = 1",
                qlen
            ),
            resp("OK", "resultset", false, rslen),
            req("SELECT empty_t", "SELECT a FROM empty_t", q2len),
            resp("OK", "resultset", false, rs2len),
        ]
    );
}

#[test]
fn login_error_is_login_failed_not_a_request() {
    let script = vec![
        (SC, greeting(BASE)),
        (CS, login(BASE)),
        (SC, err(2, 1045, "Access denied for user")),
    ];
    let ev = run_all_splits(false, &script);
    assert_eq!(
        ev,
        vec![Event::LoginFailed {
            code: Code::from_str_lossy("LOGIN ERR 1045")
        }]
    );
}

#[test]
fn refused_before_greeting_is_login_failed() {
    let script = vec![(SC, err(0, 1040, "Too many connections"))];
    let ev = run_all_splits(false, &script);
    assert_eq!(
        ev,
        vec![Event::LoginFailed {
            code: Code::from_str_lossy("LOGIN ERR 1040")
        }]
    );
}

#[test]
fn auth_switch_and_more_data_then_ping() {
    let mut script = vec![(SC, greeting(BASE)), (CS, login(BASE))];
    let mut sw = vec![0xFE];
    sw.extend_from_slice(b"mysql_native_password\0abcdefghijklmnopqrst\0");
    script.push((SC, pkt(2, &sw)));
    script.push((CS, pkt(3, AUTH)));
    script.push((SC, pkt(4, &[0x01, 0x03]))); // fast auth success
    script.push((SC, ok(5, 2)));
    script.push((CS, cmd(COM_PING, &[])));
    script.push((SC, ok(1, 2)));
    let ev = run_all_splits(false, &script);
    assert_eq!(
        ev,
        vec![req("PING", "PING", 5), resp("OK", "OK", false, 11)]
    );
    assert_no_login_data(&ev);
}

#[test]
fn chained_result_sets_are_one_response() {
    let mut script = login_script(BASE);
    script.push((CS, query("CALL p()")));
    let (rs1, next) = result_set(1, 1, 2, true, SERVER_MORE_RESULTS_EXISTS | 2);
    let (rs2, next) = result_set(next, 2, 1, true, SERVER_MORE_RESULTS_EXISTS | 2);
    let fin = ok(next, 2);
    let total = rs1.len() + rs2.len() + fin.len();
    script.push((SC, rs1));
    script.push((SC, rs2));
    script.push((SC, fin));
    script.push((CS, cmd(COM_PING, &[])));
    script.push((SC, ok(1, 2)));
    let ev = run_all_splits(false, &script);
    assert_eq!(
        ev,
        vec![
            req("CALL p", "CALL p()", 13),
            resp("OK", "resultset", false, total),
            req("PING", "PING", 5),
            resp("OK", "OK", false, 11),
        ]
    );
}

#[test]
fn multi_statement_ok_then_result_set() {
    let mut script = login_script(BASE | CLIENT_DEPRECATE_EOF);
    script.push((CS, query("UPDATE t SET a=1; SELECT a FROM t")));
    let first = ok(1, SERVER_MORE_RESULTS_EXISTS | 2);
    let (rs, _) = result_set(2, 1, 1, false, 2);
    let total = first.len() + rs.len();
    script.push((SC, first));
    script.push((SC, rs));
    let ev = run_all_splits(false, &script);
    assert_eq!(ev[1], resp("OK", "resultset", false, total));
    assert_eq!(ev.len(), 2);
}

#[test]
fn err_to_a_query() {
    let mut script = login_script(BASE);
    let e = err(1, 1146, "Table 'test.nope' doesn't exist");
    let elen = e.len();
    script.push((CS, query("select * from nope")));
    script.push((SC, e));
    let ev = run_all_splits(false, &script);
    assert_eq!(
        ev,
        vec![
            req("SELECT nope", "select * from nope", 23),
            resp("ERR 1146", "ERR", true, elen)
        ]
    );
}

#[test]
fn err_in_the_middle_of_a_result_set() {
    let mut script = login_script(BASE);
    script.push((CS, query("SELECT * FROM big")));
    let mut rs = pkt(1, &[1]);
    rs.extend(coldef(2, "a"));
    rs.extend(eof(3, 0));
    rs.extend(text_row(4, &["x"]));
    rs.extend(err(5, 1317, "Query execution was interrupted"));
    let n = rs.len();
    script.push((SC, rs));
    let ev = run_all_splits(false, &script);
    assert_eq!(ev[1], resp("ERR 1317", "ERR", true, n));
}

fn binary_row(seq: u8, a: u32) -> Vec<u8> {
    // 0x00 header, NULL bitmap ((2 + 2 + 7) / 8 = 1 byte), LONG value, lenenc string.
    let mut p = vec![0x00, 0x00];
    p.extend_from_slice(&a.to_le_bytes());
    lenenc_str(&mut p, b"bob");
    pkt(seq, &p)
}

#[test]
fn prepare_execute_binary_rows_and_close() {
    let mut script = login_script(BASE);
    let sql = "SELECT id, name FROM users WHERE id = ?";
    let prep = cmd(COM_STMT_PREPARE, sql.as_bytes());
    let prep_len = prep.len();
    script.push((CS, prep));
    // PREPARE OK: stmt 9, 2 columns, 1 param; param def + EOF, 2 column defs + EOF.
    let mut pok = pkt(1, &[0x00, 9, 0, 0, 0, 2, 0, 1, 0, 0, 0, 0]);
    pok.extend(coldef(2, "?"));
    pok.extend(eof(3, 2));
    pok.extend(coldef(4, "id"));
    pok.extend(coldef(5, "name"));
    pok.extend(eof(6, 2));
    let pok_len = pok.len();
    script.push((SC, pok));
    // EXECUTE stmt 9: flags 0, iteration 1, null bitmap, new-params-bound, type, value.
    let mut body = 9u32.to_le_bytes().to_vec();
    body.extend_from_slice(&[0, 1, 0, 0, 0, 0, 1, 0x03, 0x00, 5, 0, 0, 0]);
    let exec = cmd(COM_STMT_EXECUTE, &body);
    let exec_len = exec.len();
    script.push((CS, exec.clone()));
    let mut rs = pkt(1, &[2]);
    rs.extend(coldef(2, "id"));
    rs.extend(coldef(3, "name"));
    rs.extend(eof(4, 2));
    rs.extend(binary_row(5, 5)); // starts with 0x00: a row, not an OK
    rs.extend(binary_row(6, 6));
    rs.extend(eof(7, 2));
    let rs_len = rs.len();
    script.push((SC, rs));
    script.push((CS, cmd(COM_STMT_CLOSE, &9u32.to_le_bytes())));
    // After the close the id is forgotten.
    script.push((CS, exec));
    script.push((SC, err(1, 1243, "Unknown prepared statement handler")));
    let ev = run_all_splits(false, &script);
    assert_eq!(
        ev,
        vec![
            req("SELECT users", sql, prep_len),
            resp("OK", "OK", false, pok_len),
            req("EXECUTE SELECT users", "EXECUTE SELECT users", exec_len),
            resp("OK", "resultset", false, rs_len),
            req("EXECUTE", "EXECUTE", exec_len),
            resp("ERR 1243", "ERR", true, 4 + 9 + 34),
        ]
    );
}

#[test]
fn prepare_without_eof_in_deprecate_mode() {
    let mut script = login_script(BASE | CLIENT_DEPRECATE_EOF);
    script.push((CS, cmd(COM_STMT_PREPARE, b"INSERT INTO t VALUES (?, ?)")));
    let mut pok = pkt(1, &[0x00, 1, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0]);
    pok.extend(coldef(2, "?"));
    pok.extend(coldef(3, "?"));
    let n = pok.len();
    script.push((SC, pok));
    script.push((CS, cmd(COM_PING, &[])));
    script.push((SC, ok(1, 2)));
    let ev = run_all_splits(false, &script);
    assert_eq!(ev[1], resp("OK", "OK", false, n));
    assert_eq!(ev[3], resp("OK", "OK", false, 11));
    assert_eq!(ev.len(), 4);
}

#[test]
fn quit_close_and_long_data_are_not_requests() {
    let mut script = login_script(BASE);
    script.push((CS, cmd(COM_STMT_SEND_LONG_DATA, &[1, 0, 0, 0, 0, 0, b'x'])));
    script.push((CS, cmd(COM_STMT_CLOSE, &[1, 0, 0, 0])));
    script.push((CS, cmd(COM_QUIT, &[])));
    assert_eq!(run_all_splits(false, &script), vec![]);
}

#[test]
fn ping_init_db_field_list_statistics() {
    let mut script = login_script(BASE);
    script.push((CS, cmd(COM_PING, &[])));
    script.push((SC, ok(1, 2)));
    script.push((CS, cmd(COM_INIT_DB, b"test")));
    script.push((SC, ok(1, 2)));
    script.push((CS, cmd(COM_FIELD_LIST, b"agent\0")));
    let mut fl = coldef(1, "a");
    fl.extend(coldef(2, "b"));
    fl.extend(eof(3, 2));
    let fl_len = fl.len();
    script.push((SC, fl));
    script.push((CS, cmd(COM_STATISTICS, &[])));
    let st = pkt(1, b"Uptime: 5  Threads: 1  Questions: 9");
    let st_len = st.len();
    script.push((SC, st));
    let ev = run_all_splits(false, &script);
    assert_eq!(
        ev,
        vec![
            req("PING", "PING", 5),
            resp("OK", "OK", false, 11),
            req("INIT_DB", "INIT_DB", 9),
            resp("OK", "OK", false, 11),
            req("FIELD_LIST agent", "FIELD_LIST agent", 11),
            resp("OK", "OK", false, fl_len),
            req("COM_STATISTICS", "COM_STATISTICS", 5),
            resp("OK", "string", false, st_len),
        ]
    );
}

#[test]
fn change_user_error_after_auth_switch() {
    let mut script = login_script(BASE);
    script.push((
        CS,
        cmd(COM_CHANGE_USER, b"root2\0\x14AUTHRESPONSE-SECRET!\0"),
    ));
    let mut sw = vec![0xFE];
    sw.extend_from_slice(b"mysql_native_password\0abcdefghijklmnopqrst\0");
    script.push((SC, pkt(1, &sw)));
    script.push((CS, pkt(2, AUTH)));
    script.push((SC, err(3, 1045, "Access denied for user 'root2'")));
    script.push((CS, cmd(COM_PING, &[])));
    script.push((SC, ok(1, 2)));
    let ev = run_all_splits(false, &script);
    assert_eq!(ev.len(), 4);
    assert_eq!(
        ev[0],
        req("COM_CHANGE_USER", "COM_CHANGE_USER", 4 + 1 + 6 + 1 + 20 + 1)
    );
    match &ev[1] {
        Event::Response(r) => {
            assert_eq!((r.code.as_str(), r.error), ("ERR 1045", true));
        }
        e => panic!("{e:?}"),
    }
    assert_eq!(ev[2], req("PING", "PING", 5));
    assert_no_login_data(&ev);
}

#[test]
fn local_infile_is_one_exchange() {
    let mut script = login_script(BASE);
    let q = query("LOAD DATA LOCAL INFILE '/tmp/x' INTO TABLE t");
    let qlen = q.len();
    script.push((CS, q));
    let fb = pkt(1, b"\xfb/tmp/x");
    script.push((SC, fb.clone()));
    script.push((CS, pkt(2, b"1,2\n3,4\n")));
    script.push((CS, pkt(3, b"")));
    let o = ok(4, 2);
    let total = fb.len() + o.len();
    script.push((SC, o));
    let ev = run_all_splits(false, &script);
    assert_eq!(
        ev,
        vec![
            req("LOAD", "LOAD DATA LOCAL INFILE '/tmp/x' INTO TABLE t", qlen),
            resp("OK", "OK", false, total)
        ]
    );
}

#[test]
fn ssl_request_is_encrypted_then_silence() {
    let mut ssl = (BASE | CLIENT_SSL).to_le_bytes().to_vec();
    ssl.extend_from_slice(&0x0100_0000u32.to_le_bytes());
    ssl.push(0xff);
    ssl.extend_from_slice(&[0; 23]);
    assert_eq!(ssl.len(), 32);
    let mut hello = pkt(1, &ssl);
    hello.extend_from_slice(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"); // ClientHello
    let script = vec![
        (SC, greeting(BASE | CLIENT_SSL)),
        (CS, hello),
        (SC, b"\x16\x03\x03\x00\x5a\x02\x00\x00\x56".to_vec()),
        (CS, query("SELECT 1")), // looks like a query, but it is inside TLS
    ];
    let ev = run_all_splits(false, &script);
    assert_eq!(ev, vec![Event::Encrypted]);
}

#[test]
fn huge_query_over_16mib_is_followed_incrementally() {
    let limits = Limits::default();
    let mut c = Caller::new(false, &limits);
    for (d, b) in login_script(BASE) {
        c.feed(d, &b);
    }
    // A 17 MiB COM_QUERY: 0xFFFFFF payload bytes, then a continuation packet.
    let total = 17 * 1024 * 1024;
    let mut msg = Vec::with_capacity(total + 8);
    msg.extend_from_slice(&[0xff, 0xff, 0xff, 0x00, COM_QUERY]);
    msg.extend_from_slice(b"INSERT INTO blobs VALUES ('");
    msg.resize(4 + 0xFF_FFFF, b'a');
    let rest = total - 0xFF_FFFF;
    msg.extend_from_slice(&[rest as u8, (rest >> 8) as u8, (rest >> 16) as u8, 1]);
    msg.resize(msg.len() + rest - 2, b'b');
    msg.extend_from_slice(b"')");
    for piece in msg.chunks(1448) {
        c.feed(CS, piece);
    }
    assert!(c.max_seen < 4096, "buffered {}", c.max_seen);
    assert!(!c.s.in_message(CS));
    c.feed(SC, &ok(2, 2));
    assert_eq!(
        c.out,
        vec![
            req("INSERT blobs", "", msg.len()),
            resp("OK", "OK", false, 11)
        ]
        .into_iter()
        .map(|e| match e {
            Event::Request(mut r) => {
                // The text is the head of the SQL, cut at 256 characters.
                let mut t = RequestText::from_str_lossy("INSERT INTO blobs VALUES ('");
                t.push_str(&"a".repeat(300));
                r.text = t;
                Event::Request(r)
            }
            e => e,
        })
        .collect::<Vec<_>>()
    );
}

#[test]
fn huge_row_in_a_result_set_is_followed_incrementally() {
    let mut c = Caller::new(false, &Limits::default());
    for (d, b) in login_script(BASE) {
        c.feed(d, &b);
    }
    c.feed(CS, &query("SELECT b FROM blobs"));
    let mut rs = pkt(1, &[1]);
    rs.extend(coldef(2, "b"));
    rs.extend(eof(3, 0));
    // One 0xFFFFFF-byte row packet beginning with a lenenc 0xFE length, then its end.
    let value = 0xFF_FFFF - 9 + 10;
    rs.extend_from_slice(&[0xff, 0xff, 0xff, 4, 0xFE]);
    rs.extend_from_slice(&(value as u64).to_le_bytes());
    rs.resize(rs.len() + 0xFF_FFFF - 9, b'z');
    rs.extend(pkt(5, &[b'z'; 10]));
    rs.extend(eof(6, 2));
    let n = rs.len();
    for piece in rs.chunks(65536) {
        c.feed(SC, piece);
        if c.out.len() < 2 {
            assert!(c.s.in_message(SC));
        }
    }
    assert!(c.max_seen < 4096);
    assert_eq!(c.out[1], resp("OK", "resultset", false, n));
    assert!(!c.s.in_message(SC));
}

#[test]
fn message_over_the_limit_is_an_anomaly_and_resyncs() {
    let limits = Limits {
        max_mysql_message: 20_000_000,
        ..Limits::default()
    };
    let mut c = Caller::new(false, &limits);
    for (d, b) in login_script(BASE) {
        c.feed(d, &b);
    }
    let mut msg = vec![0xff, 0xff, 0xff, 0x00, COM_QUERY];
    msg.resize(4 + 0xFF_FFFF, b'a');
    msg.extend_from_slice(&[0xff, 0xff, 0xff, 1]);
    msg.resize(msg.len() + 0xFF_FFFF, 0x00);
    msg.extend_from_slice(&[0, 0, 0, 2]);
    for piece in msg.chunks(1448) {
        c.feed(CS, piece);
    }
    c.feed(CS, &query("SELECT 1"));
    assert_eq!(c.out[0], Event::Anomaly(Anomaly::LimitExceeded));
    assert_eq!(c.out[1], req("SELECT", "SELECT 1", 13));
}

#[test]
fn secrets_are_scrubbed() {
    let mut script = login_script(BASE);
    script.push((CS, query("CREATE USER 'bob'@'%' IDENTIFIED BY 'hunter2'")));
    script.push((SC, ok(1, 2)));
    script.push((
        CS,
        query("SET PASSWORD FOR 'bob'@'%' = PASSWORD('hunter3')"),
    ));
    script.push((SC, ok(1, 2)));
    script.push((
        CS,
        query("ALTER USER bob IDENTIFIED WITH caching_sha2_password BY 'hunter4'"),
    ));
    script.push((SC, ok(1, 2)));
    let ev = run_all_splits(false, &script);
    let dump = format!("{ev:?}");
    assert!(!dump.contains("hunter"), "{dump}");
    match &ev[0] {
        Event::Request(r) => {
            assert_eq!(r.resource.as_str(), "CREATE");
            assert_eq!(r.text.as_str(), "CREATE USER 'bob'@'%' IDENTIFIED BY '?'");
        }
        e => panic!("{e:?}"),
    }
    match &ev[2] {
        Event::Request(r) => assert_eq!(
            r.text.as_str(),
            "SET PASSWORD FOR 'bob'@'%' = PASSWORD('?')"
        ),
        e => panic!("{e:?}"),
    }
}

#[test]
fn garbage_resyncs_on_the_next_command() {
    let mut script = login_script(BASE);
    // A seq-0 packet with an unknown command byte, then garbage, then a real query.
    let mut junk = pkt(0, &[0x99, 1, 2, 3]);
    junk.extend_from_slice(b"\x07\x00\x00\x05garbage\x00\x13");
    script.push((CS, junk));
    script.push((CS, query("SELECT 1")));
    script.push((SC, ok(1, 2)));
    let ev = run_all_splits(false, &script);
    assert_eq!(
        ev,
        vec![
            Event::Anomaly(Anomaly::Malformed),
            req("SELECT", "SELECT 1", 13),
            resp("OK", "OK", false, 11)
        ]
    );
}

#[test]
fn server_gap_waits_for_the_next_command() {
    let mut c = Caller::new(false, &Limits::default());
    for (d, b) in login_script(BASE) {
        c.feed(d, &b);
    }
    c.feed(CS, &query("SELECT * FROM t"));
    let (rs, _) = result_set(1, 2, 5, true, 2);
    c.feed(SC, &rs[..40]);
    assert!(c.s.in_message(SC));
    c.s.gap(SC);
    c.buf[SC.index()].clear();
    c.feed(SC, &rs[70..]); // the rest of the lost response: discarded
    c.feed(CS, &query("SELECT * FROM u"));
    let (rs2, _) = result_set(1, 1, 1, true, 2);
    c.feed(SC, &rs2);
    assert_eq!(
        c.out,
        vec![
            req("SELECT t", "SELECT * FROM t", 20),
            req("SELECT u", "SELECT * FROM u", 20),
            resp("OK", "resultset", false, rs2.len()),
        ]
    );
}

#[test]
fn client_gap_resyncs_at_a_command_header() {
    let mut c = Caller::new(false, &Limits::default());
    for (d, b) in login_script(BASE) {
        c.feed(d, &b);
    }
    let q = query("SELECT * FROM t WHERE a = 'xyz'");
    c.feed(CS, &q[..10]);
    c.s.gap(CS);
    c.buf[CS.index()].clear();
    c.feed(CS, &q[15..]);
    c.feed(CS, &cmd(COM_PING, &[]));
    c.feed(SC, &ok(1, 2));
    assert_eq!(
        c.out,
        vec![req("PING", "PING", 5), resp("OK", "OK", false, 11)]
    );
}

#[test]
fn mid_stream_start_detects_deprecate_eof() {
    // Tail of an earlier query, then a whole one; the server's tail of an older response.
    let mut tail = b"ROM t WHERE a = 1".to_vec();
    tail.extend(query("SELECT * FROM t"));
    let (old, _) = result_set(3, 1, 1, false, 2);
    let (rs, _) = result_set(1, 2, 2, false, 2);
    let (rs2, _) = result_set(1, 1, 0, false, 2);
    let script = vec![
        (SC, old[7..].to_vec()),
        (CS, tail),
        (SC, rs.clone()),
        (CS, query("SELECT * FROM u")),
        (SC, rs2.clone()),
    ];
    let ev = run_all_splits(true, &script);
    assert_eq!(
        ev,
        vec![
            req("SELECT t", "SELECT * FROM t", 20),
            resp("OK", "resultset", false, rs.len()),
            req("SELECT u", "SELECT * FROM u", 20),
            resp("OK", "resultset", false, rs2.len()),
        ]
    );
}

#[test]
fn mid_stream_start_detects_eof_mode_and_prepare_with_unknown_mode() {
    let (rs, _) = result_set(1, 2, 2, true, 2);
    let mut pok = pkt(1, &[0x00, 3, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]);
    pok.extend(coldef(2, "?"));
    pok.extend(eof(3, 2));
    // Unknown mode: a PREPARE first, its response decided by the packet after the params.
    let script1 = vec![
        (CS, cmd(COM_STMT_PREPARE, b"DELETE FROM t WHERE id = ?")),
        (SC, pok.clone()),
        (CS, cmd(COM_PING, &[])),
        (SC, ok(1, 2)),
    ];
    let ev = run_all_splits(true, &script1);
    assert_eq!(
        ev,
        vec![
            req("DELETE t", "DELETE FROM t WHERE id = ?", 31),
            resp("OK", "OK", false, pok.len()),
            req("PING", "PING", 5),
            resp("OK", "OK", false, 11),
        ]
    );
    let script2 = vec![(CS, query("SELECT * FROM t")), (SC, rs.clone())];
    let ev = run_all_splits(true, &script2);
    assert_eq!(ev[1], resp("OK", "resultset", false, rs.len()));
    // Deferred PREPARE response completed by the close of the server side.
    let mut c = Caller::new(true, &Limits::default());
    c.feed(CS, &cmd(COM_STMT_PREPARE, b"DELETE FROM t WHERE id = ?"));
    let mut pok2 = pkt(1, &[0x00, 3, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]);
    pok2.extend(coldef(2, "?"));
    c.feed(SC, &pok2);
    assert!(c.s.in_message(SC));
    c.s.close(SC, &mut c.out);
    assert_eq!(c.out[1], resp("OK", "OK", false, pok2.len()));
}

#[test]
fn not_a_greeting_switches_to_command_mode() {
    let (old, _) = result_set(1, 1, 1, true, 2);
    let script = vec![(SC, old), (CS, query("SELECT 2")), (SC, ok(1, 2))];
    let ev = run_all_splits(false, &script);
    assert_eq!(
        ev,
        vec![req("SELECT", "SELECT 2", 13), resp("OK", "OK", false, 11)]
    );
}

#[test]
fn pipelined_commands_and_responses() {
    let mut script = login_script(BASE);
    let mut two = query("SELECT 1");
    two.extend(cmd(COM_STMT_CLOSE, &[1, 0, 0, 0]));
    two.extend(cmd(COM_PING, &[]));
    script.push((CS, two));
    let mut both = ok(1, 2);
    both.extend(ok(1, 2));
    script.push((SC, both));
    let ev = run_all_splits(false, &script);
    assert_eq!(
        ev,
        vec![
            req("SELECT", "SELECT 1", 13),
            req("PING", "PING", 5),
            resp("OK", "OK", false, 11),
            resp("OK", "OK", false, 11),
        ]
    );
}

#[test]
fn unsolicited_response_is_an_anomaly() {
    let mut script = login_script(BASE);
    script.push((
        SC,
        err(0, 4031, "The client was disconnected by the server"),
    ));
    let ev = run_all_splits(false, &script);
    assert_eq!(ev, vec![Event::Anomaly(Anomaly::UnexpectedMessage)]);
}

// ----- compressed protocol -------------------------------------------------------------

fn frame(seq: u8, payload: &[u8], compress: bool) -> Vec<u8> {
    let (body, ulen) = if compress {
        (
            miniz_oxide::deflate::compress_to_vec_zlib(payload, 6),
            payload.len(),
        )
    } else {
        (payload.to_vec(), 0)
    };
    let n = body.len();
    let mut v = vec![
        n as u8,
        (n >> 8) as u8,
        (n >> 16) as u8,
        seq,
        ulen as u8,
        (ulen >> 8) as u8,
        (ulen >> 16) as u8,
    ];
    v.extend(body);
    v
}

#[test]
fn compressed_protocol() {
    let caps = BASE | CLIENT_COMPRESS;
    let mut script = login_script(caps);
    let q = query("SELECT * FROM az_controller_connection");
    let (rs, _) = result_set(1, 3, 4, true, 2);
    // The server's result set in two compressed frames, the second split mid-packet.
    let cut = rs.len() / 2 + 3;
    let mut srv = frame(1, &rs[..cut], true);
    srv.extend(frame(2, &rs[cut..], true));
    let (f1, f2) = (frame(0, &q, false), srv.len());
    script.push((CS, f1.clone()));
    script.push((SC, srv));
    let q2 = query("SELECT * FROM vip");
    let f3 = frame(0, &q2, true);
    let f4 = frame(1, &err(1, 1146, "no such table"), false);
    let (f3len, f4len) = (f3.len(), f4.len());
    script.push((CS, f3));
    script.push((SC, f4));
    let ev = run_all_splits(false, &script);
    assert_eq!(
        ev,
        vec![
            // Sizes on the wire: the compressed frames.
            req(
                "SELECT az_controller_connection",
                "SELECT * FROM az_controller_connection",
                f1.len()
            ),
            resp("OK", "resultset", false, f2),
            req("SELECT vip", "SELECT * FROM vip", f3len),
            resp("ERR 1146", "ERR", true, f4len),
        ]
    );
}

#[test]
fn two_responses_in_one_compressed_frame() {
    let mut c = Caller::new(false, &Limits::default());
    for (d, b) in login_script(BASE | CLIENT_COMPRESS) {
        c.feed(d, &b);
    }
    let mut two = query("SELECT 1");
    two.extend(cmd(COM_PING, &[]));
    let f = frame(0, &two, false);
    c.feed(CS, &f);
    let mut oks = ok(1, 2);
    oks.extend(ok(1, 2));
    let g = frame(1, &oks, false);
    c.feed(SC, &g);
    // The frame counts toward the first message; the second gets its share of the frame.
    let share = (11 * g.len() as u64 / 22) as usize;
    assert_eq!(
        c.out,
        vec![
            req("SELECT", "SELECT 1", f.len()),
            req("PING", "PING", (5 * f.len() as u64 / 18) as usize),
            resp("OK", "OK", false, g.len()),
            resp("OK", "OK", false, share),
        ]
    );
}

#[test]
fn compressed_frame_larger_than_the_buffer_is_streamed() {
    let limits = Limits {
        max_buffered: 4096,
        ..Limits::default()
    };
    let mut c = Caller::new(false, &limits);
    for (d, b) in login_script(BASE | CLIENT_COMPRESS) {
        c.feed(d, &b);
    }
    c.feed(CS, &frame(0, &query("SELECT * FROM process"), false));
    let (rs, _) = result_set(1, 10, 2000, true, 2);
    assert!(rs.len() > 100_000);
    let f = frame(1, &rs, true);
    for piece in f.chunks(1448) {
        c.feed(SC, piece);
    }
    assert!(c.max_seen < 7, "{}", c.max_seen);
    assert_eq!(c.out[1], resp("OK", "resultset", false, f.len()));
    assert!(!c.s.in_message(SC));
}

#[test]
fn corrupt_compressed_frame_is_skipped() {
    let mut c = Caller::new(false, &Limits::default());
    for (d, b) in login_script(BASE | CLIENT_COMPRESS) {
        c.feed(d, &b);
    }
    c.feed(CS, &frame(0, &query("SELECT 1"), false));
    let mut bad = frame(1, &ok(1, 2), true);
    let last = bad.len() - 3;
    bad[9] ^= 0xff;
    bad[last] ^= 0x55;
    c.feed(SC, &bad);
    c.feed(CS, &frame(0, &query("SELECT 2"), false));
    let good = frame(1, &ok(1, 2), true);
    c.feed(SC, &good);
    assert!(
        c.out.contains(&Event::Anomaly(Anomaly::Malformed)),
        "{:?}",
        c.out
    );
    assert_eq!(c.out.last(), Some(&resp("OK", "OK", false, good.len())));
}

// ----- probe ---------------------------------------------------------------------------

#[test]
fn probes() {
    assert_eq!(probe(&greeting(BASE), false), Probe::Match(Role::Response));
    assert_eq!(probe(&greeting(BASE)[..9], false), Probe::NeedMore);
    assert_eq!(probe(&[1, 0, 0], true), Probe::NeedMore);
    // SQL text in a command is evidence on any port; other text is not.
    assert_eq!(
        probe(&query("SELECT 1"), false),
        Probe::Match(Role::Request)
    );
    assert_eq!(probe(&query("hello world, not sql"), false), Probe::No);
    // A lone PING without the port hint waits for the next command.
    assert_eq!(probe(&[1, 0, 0, 0, 0x0e], false), Probe::NeedMore);
    let mut ping_then_query = vec![1, 0, 0, 0, 0x0e];
    ping_then_query.extend_from_slice(&query("select * from t"));
    assert_eq!(probe(&ping_then_query, false), Probe::Match(Role::Request));
    assert_eq!(probe(&query("SELECT 1"), true), Probe::Match(Role::Request));
    assert_eq!(
        probe(&cmd(COM_PING, &[]), true),
        Probe::Match(Role::Request)
    );
    assert_eq!(probe(&ok(1, 2), true), Probe::Match(Role::Response));
    assert_eq!(
        probe(&err(1, 1146, "x"), true),
        Probe::Match(Role::Response)
    );
    assert_eq!(probe(&pkt(1, &[3]), true), Probe::Match(Role::Response));
    assert_eq!(probe(b"GET / HTTP/1.1\r\n", true), Probe::No);
    assert_eq!(probe(b"*1\r\n$4\r\nPING\r\n", true), Probe::No);
    assert_eq!(probe(b"\x16\x03\x01\x02\x00\x01", true), Probe::No);
    assert_eq!(probe(&pkt(0, b"\x03\x01\x02\x03"), true), Probe::No);
}

// ----- robustness: garbage and mutated streams ------------------------------------------

struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

/// Feed `script` in random chunks; the caller's buffer must stay bounded (the session
/// never needs more than a header and a head), and nothing panics.
fn feed_hostile(mid: bool, script: &[(Direction, Vec<u8>)], rng: &mut Lcg) {
    let limits = Limits::default();
    let mut c = Caller::new(mid, &limits);
    for (dir, bytes) in script {
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let n = (1 + rng.next() as usize % 3000).min(rest.len());
            c.feed(*dir, &rest[..n]);
            rest = &rest[n..];
            if c.buf[dir.index()].len() >= limits.max_buffered {
                c.s.gap(*dir);
                c.buf[dir.index()].clear();
            }
        }
    }
    assert!(c.max_seen <= QUERY_HEAD + 8, "buffered {}", c.max_seen);
    for dir in [CS, SC] {
        c.s.close(dir, &mut c.out);
    }
}

#[test]
fn garbage_and_mutations_never_panic_or_stall() {
    let mut rng = Lcg(42);
    for round in 0..200 {
        // Pure garbage, both directions.
        let garbage: Vec<u8> = (0..4000).map(|_| rng.next() as u8).collect();
        let script = vec![(CS, garbage.clone()), (SC, garbage)];
        feed_hostile(round % 2 == 0, &script, &mut rng);
        // A valid conversation (plain or compressed) with a few bytes flipped.
        let caps = if round % 3 == 0 {
            BASE | CLIENT_COMPRESS
        } else {
            BASE | CLIENT_DEPRECATE_EOF
        };
        let mut script = login_script(caps);
        for i in 0..6 {
            let q = query(&format!("SELECT * FROM t{i} WHERE a = 'x{i}'"));
            let (rs, _) = result_set(1, 3, 20, caps & CLIENT_DEPRECATE_EOF == 0, 2);
            if caps & CLIENT_COMPRESS != 0 {
                script.push((CS, frame(0, &q, i % 2 == 0)));
                script.push((SC, frame(1, &rs, true)));
            } else {
                script.push((CS, q));
                script.push((SC, rs));
            }
        }
        for _ in 0..4 {
            let m = rng.next() as usize % script.len();
            let msg = &mut script[m].1;
            let k = rng.next() as usize % msg.len();
            msg[k] = rng.next() as u8;
        }
        feed_hostile(false, &script, &mut rng);
    }
}

#[test]
fn single_packet_over_the_limit() {
    let limits = Limits {
        max_mysql_message: 150,
        ..Limits::default()
    };
    let mut c = Caller::new(false, &limits);
    for (d, b) in login_script(BASE) {
        c.feed(d, &b);
    }
    assert_eq!(c.out, vec![]);
    c.feed(CS, &query(&format!("SELECT '{}'", "a".repeat(200))));
    c.feed(CS, &query("SELECT 1"));
    c.feed(SC, &ok(1, 2));
    assert_eq!(
        c.out,
        vec![
            Event::Anomaly(Anomaly::LimitExceeded),
            req("SELECT", "SELECT 1", 13),
            resp("OK", "OK", false, 11)
        ]
    );
}
