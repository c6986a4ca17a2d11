//! Model test of the quota (QUOTA-1 to QUOTA-5): seeded random sequences of put, overwrite,
//! abort, resume (larger and smaller declared sizes), mv, rm, mkdir and rmdir from 2 to 4
//! concurrent sessions of one user against a real server. Uploads stay open across steps, so
//! other sessions' operations interleave with them. After every step the disk holds no more
//! than the quota and the store accounts for at least what the disk holds; at rest, usage
//! equals the disk exactly.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{assert_usage_matches_disk, assert_within_quota, PW};
use crate::support::*;
use xfer::proto::{ErrorCode, Request, Response, Transport};

const QUOTA: u64 = 1 << 20;
const MAX_ENTRIES: u64 = 7;
const STEPS: usize = 120;
const NAMES: [&str; 6] = ["a", "b", "c", "d0/a", "d0/b", "d1/c"];
const DIRS: [&str; 2] = ["d0", "d1"];

/// An upload a session has open.
struct Open {
    name: String,
    size: usize,
    sent: usize,
}

struct Sess {
    raw: Raw,
    open: Option<Open>,
}

/// The bytes of `name`: every size is a prefix of the same stream, so a resume with another
/// declared size still verifies.
fn content(name: &str, size: usize) -> Vec<u8> {
    let seed = name.bytes().fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    pseudo_random(size, seed)
}

fn pick<'a>(rng: &mut StdRng, from: &[&'a str]) -> &'a str {
    from[rng.gen_range(0..from.len())]
}

/// One step of an idle session.
async fn idle_step(rng: &mut StdRng, s: &mut Sess) {
    let name = pick(rng, &NAMES).to_string();
    match rng.gen_range(0..10) {
        0..=3 => {
            let size = rng.gen_range(0..400) * 1024 + rng.gen_range(0..1024);
            let resume = rng.gen_bool(0.4);
            let req = Request::Put { path: name.clone(), size: size as u64, resume, transport: Transport::Tcp };
            match s.raw.call(&req).await {
                Response::PutReady { offset, .. } => s.open = Some(Open { name, size, sent: offset as usize }),
                Response::Error { code, .. } => assert!(
                    matches!(
                        code,
                        ErrorCode::QuotaExceeded
                            | ErrorCode::FileQuotaExceeded
                            | ErrorCode::SourceChanged
                            | ErrorCode::Busy
                            | ErrorCode::NotFound
                            | ErrorCode::IsADirectory
                    ),
                    "put {name}: {code:?}"
                ),
                other => panic!("put {name}: {other:?}"),
            }
        }
        4 => expect_ok_or_refused(s.raw.call(&Request::Remove { path: name }).await),
        5 => {
            let part = match name.rsplit_once('/') {
                Some((dir, base)) => format!("{dir}/.{base}.xfer-part"),
                None => format!(".{name}.xfer-part"),
            };
            expect_ok_or_refused(s.raw.call(&Request::Remove { path: part }).await)
        }
        6 => {
            let to = pick(rng, &NAMES).to_string();
            expect_ok_or_refused(s.raw.call(&Request::Rename { from: name, to }).await)
        }
        7 => expect_ok_or_refused(s.raw.call(&Request::Mkdir { path: pick(rng, &DIRS).into() }).await),
        8 => expect_ok_or_refused(s.raw.call(&Request::Rmdir { path: pick(rng, &DIRS).into() }).await),
        _ => {
            let (from, to) = (pick(rng, &DIRS).to_string(), pick(rng, &DIRS).to_string());
            expect_ok_or_refused(s.raw.call(&Request::Rename { from, to }).await)
        }
    }
}

/// One step of a session with an open upload: more data, finish, or abort.
async fn upload_step(rng: &mut StdRng, s: &mut Sess) {
    let Some(open) = s.open.as_mut() else { return };
    let data = content(&open.name, open.size);
    match rng.gen_range(0..4) {
        0 | 1 if open.sent < open.size => {
            let to = (open.sent + rng.gen_range(1..200 * 1024)).min(open.size);
            s.raw.send_range(&data, open.sent, to).await;
            open.sent = to;
        }
        2 => {
            s.raw.send_range(&data, open.sent, open.size).await;
            let r = s.raw.call(&Request::PutEnd { md5: md5_bytes(&data) }).await;
            assert!(matches!(r, Response::PutDone { .. }), "{} of {}: {r:?}", open.name, open.size);
            s.open = None;
        }
        _ => {
            let r = s.raw.call(&Request::Abort).await;
            assert!(matches!(r, Response::Ok), "abort {}: {r:?}", open.name);
            s.open = None;
        }
    }
}

fn expect_ok_or_refused(r: Response) {
    match r {
        Response::Ok => {}
        Response::Error { code, .. } => assert!(
            !matches!(code, ErrorCode::Internal | ErrorCode::BadRequest | ErrorCode::DiskFull),
            "unexpected {code:?}"
        ),
        other => panic!("unexpected reply {other:?}"),
    }
}

async fn run_model(seed: u64) {
    let env = TestEnv::new();
    let srv = env.start();
    srv.add_user("alice", PW, QUOTA, Some(MAX_ENTRIES));
    let mut rng = StdRng::seed_from_u64(seed);
    let mut sessions = Vec::new();
    for _ in 0..rng.gen_range(2..=4) {
        sessions.push(Sess { raw: srv.raw("alice", PW).await, open: None });
    }
    for step in 0..STEPS {
        let i = rng.gen_range(0..sessions.len());
        let s = &mut sessions[i];
        if s.open.is_some() {
            upload_step(&mut rng, s).await;
        } else {
            idle_step(&mut rng, s).await;
        }
        // Chunks sent may still be on their way to the disk: what is measured is at most what
        // will be, so the bounds below hold at every step.
        let _ = step;
        assert_within_quota(&srv, "alice");
    }
    for s in sessions.iter_mut().filter(|s| s.open.is_some()) {
        assert!(matches!(s.raw.call(&Request::Abort).await, Response::Ok));
        s.open = None;
    }
    assert_usage_matches_disk(&srv, "alice");
    srv.assert_no_panics();
}

#[tokio::test]
async fn quota_model_holds_under_random_concurrent_sessions() {
    guard(async {
        for seed in [1, 2, 3, 4] {
            run_model(seed).await;
        }
    })
    .await
}
