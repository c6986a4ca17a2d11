//! Many files in flight: `-j N` runs the transfers of one command over N sessions of the same
//! login at once (the command's own and N − 1 more, each its own connection, logged in once and
//! counted against the per-user session cap like any other session), and on each session keeps
//! small transfers on the wire together (CTRL-PUT-8, CTRL-GET-6). One total bar shows files,
//! bytes, rate and ETA; each file still prints its own summary line. Errors are collected:
//! without `--keep-going` the first failure stops new transfers from starting and is reported
//! once the running ones end; with it every file is tried and the run ends with a summary and
//! `Partial`.

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::OwnedSemaphorePermit;
use xfer::client::{Client, AHEAD_MAX};
use xfer::proto::{ErrorCode, TreeEntry};

use crate::ahead;
use crate::args::{CopyArgs, ProgressArg};
use crate::error::CliError;
use crate::exit_codes::ExitCode;
use crate::remote::Ui;
use crate::session::Session;
use crate::transfers::{get_file, put_file};

/// Worker logins in flight at once. A server keeps at most `max_pending_logins_per_ip` (16 by
/// default) connections of one client address waiting for their login and closes further ones
/// at once (CTRL-SESS-5): workers all connecting together lost everything above that cap, so
/// `-j 32` moved files over 16 sessions. Half the default cap leaves room for another client
/// on the same address; the next worker connects as soon as one has logged in. (A worker whose
/// first file is large holds its permit for that file: the others still start, 8 at a time.)
const LOGINS_AT_ONCE: usize = 8;

/// One file to move.
#[derive(Debug, Clone)]
pub enum Job {
    Put { local: PathBuf, remote: String, size: u64 },
    Get { remote: String, local: PathBuf, known: Option<TreeEntry> },
}

impl Job {
    fn size(&self) -> u64 {
        match self {
            Job::Put { size, .. } => *size,
            Job::Get { known, .. } => known.as_ref().map_or(0, |e| e.size),
        }
    }

    async fn run(&self, client: &mut Client, opts: &CopyArgs, ui: &Ui) -> Result<(), CliError> {
        match self {
            Job::Put { local, remote, .. } => put_file(client, local, remote, opts, ui).await,
            Job::Get { remote, local, known } => get_file(client, remote, local, known.as_ref(), opts, ui).await,
        }
    }
}

/// What the workers share: the jobs left, the failures, and the total bar.
struct Shared {
    queue: Mutex<VecDeque<Job>>,
    failures: Mutex<Vec<CliError>>,
    total: ProgressBar,
    keep_going: bool,
    files: u64,
    finished: AtomicU64,
}

impl Shared {
    /// The next job, or None when all are taken or a failure stops the run.
    fn next(&self) -> Option<Job> {
        if !self.keep_going && !lock(&self.failures).is_empty() {
            return None;
        }
        lock(&self.queue).pop_front()
    }

    /// The next job if `fits` it, else None (and the job stays first in the queue).
    fn next_if(&self, fits: impl Fn(&Job) -> bool) -> Option<Job> {
        if !self.keep_going && !lock(&self.failures).is_empty() {
            return None;
        }
        let mut queue = lock(&self.queue);
        queue.front().is_some_and(fits).then(|| queue.pop_front()).flatten()
    }

    fn give_back(&self, job: Job) {
        lock(&self.queue).push_front(job);
    }

    /// Transfers sent ahead whose replies a lost connection took: not done, so they go back to
    /// the queue, in their order, for a session that can still answer.
    fn unanswered(&self, in_flight: VecDeque<(Job, ahead::SentAhead)>) -> Served {
        let mut queue = lock(&self.queue);
        for (job, _) in in_flight.into_iter().rev() {
            queue.push_front(job);
        }
        Served::Lost
    }

    /// Records `result` of `job`; says whether it lost the connection.
    fn done_on(&self, job: &Job, result: Result<(), CliError>) -> Served {
        let lost = result.as_ref().is_err_and(|e| e.is_connection_loss());
        self.done(job, result);
        if lost {
            Served::Lost
        } else {
            Served::Kept
        }
    }

    fn done(&self, job: &Job, result: Result<(), CliError>) {
        let n = self.finished.fetch_add(1, Ordering::Relaxed) + 1;
        self.total.inc(job.size());
        self.total.set_message(format!("{n}/{} files", self.files));
        if let Err(e) = result {
            if self.keep_going {
                self.total.suspend(|| diag!("xfer: {}", crate::escape::terminal_safe(&e.message)));
            }
            lock(&self.failures).push(e);
        }
    }
}

/// Runs `jobs` with up to `opts.parallel` sessions: `main` and the others, `helpers` if they
/// were started before the jobs were known. Returns the number of failed files with
/// `--keep-going` (each reported as it failed); without it, the first failure.
pub async fn run(
    main: &mut Session,
    helpers: Option<Helpers>,
    jobs: Vec<Job>,
    opts: &CopyArgs,
    ui: &Ui,
) -> Result<u64, CliError> {
    if jobs.is_empty() {
        if let Some(h) = helpers {
            h.dismiss().await;
        }
        return Ok(0);
    }
    let workers = usize::from(opts.parallel).max(1).min(jobs.len());
    let shared = Arc::new(Shared {
        files: jobs.len() as u64,
        total: total_bar(&jobs, ui, workers),
        queue: Mutex::new(jobs.into()),
        failures: Mutex::default(),
        keep_going: opts.keep_going,
        finished: AtomicU64::new(0),
    });
    // Per-file bars would fight over the terminal: with several in flight only the total shows.
    let worker_ui = worker_ui(ui, workers);
    let helpers = match helpers {
        Some(h) => Some(h),
        None if workers > 1 => Helpers::start(main, workers - 1, opts, ui),
        None => None,
    };
    let mut first_error = Ok(());
    if let Some(Helpers { jobs, mut set }) = helpers {
        // The command's own session is one of the `-j` sessions: logged in already, it takes
        // the first job before the others are told of any (so one file costs no other login)
        // and starts at once while they finish connecting.
        let first = shared.next();
        let _ = jobs.send(Some(shared.clone()));
        drop(jobs);
        let others = async { while set.join_next().await.is_some() {} };
        (first_error, ()) = tokio::join!(serve_all(main, first, &shared, opts, &worker_ui), others);
    }
    // Sequential, and whatever workers that could not log in left behind.
    let rest = serve_all(main, None, &shared, opts, &worker_ui).await;
    shared.total.finish_and_clear();
    first_error.and(rest)?;
    finish(&shared)
}

/// Serves jobs on the command's own session, `first` and then the queue's, until none are left
/// or its connection is lost.
async fn serve_all(
    main: &mut Session,
    first: Option<Job>,
    shared: &Shared,
    opts: &CopyArgs,
    ui: &Ui,
) -> Result<(), CliError> {
    let mut first = first;
    while let Some(job) = first.take().or_else(|| shared.next()) {
        let client = match main.client().await {
            Ok(c) => c,
            Err(e) => {
                shared.give_back(job);
                return Err(e);
            }
        };
        if serve(client, job, shared, opts, ui, None).await == Served::Lost {
            main.drop_connection();
            break;
        }
    }
    Ok(())
}

/// Per-file bars would fight over the terminal: with several sessions only the total shows.
fn worker_ui(ui: &Ui, workers: usize) -> Ui {
    let progress = if workers > 1 && ui.progress == ProgressArg::Auto { ProgressArg::None } else { ui.progress };
    Ui { progress, ..ui.clone() }
}

/// A connection that waited longer than this for its first job is opened again: the server
/// may have ended it as idle by then.
const FRESH_FOR: Duration = Duration::from_secs(10);

/// The sessions of a `-j` run besides the command's own, started before the files to move are
/// known (while the tree is walked and its directories made), so that their connections are
/// open by the time the files are; each sends its login with its first files (CTRL-AUTH-6), so
/// the server checks no password for a session that gets nothing to do, and the command's own
/// login does not wait behind theirs.
pub struct Helpers {
    jobs: tokio::sync::watch::Sender<Option<Arc<Shared>>>,
    set: tokio::task::JoinSet<()>,
}

impl Helpers {
    /// Starts `count` sessions of `main`'s login, a few at a time (`LOGINS_AT_ONCE`); `None`
    /// for none.
    pub fn start(main: &Session, count: usize, opts: &CopyArgs, ui: &Ui) -> Option<Helpers> {
        if count == 0 {
            return None;
        }
        let (jobs, ready) = tokio::sync::watch::channel(None);
        let logins = Arc::new(tokio::sync::Semaphore::new(LOGINS_AT_ONCE));
        let mut set = tokio::task::JoinSet::new();
        let ui = worker_ui(ui, count + 1);
        for _ in 0..count {
            set.spawn(work(main.sibling(), ready.clone(), opts.clone(), ui.clone(), logins.clone()));
        }
        Some(Helpers { jobs, set })
    }

    /// No files to move after all: the sessions close.
    async fn dismiss(self) {
        let Helpers { jobs, mut set } = self;
        drop(jobs);
        while set.join_next().await.is_some() {}
    }
}

/// One worker: its own session, connected at once, then jobs until none are left. A worker
/// that cannot log in (the session cap, say) gives its job back and stops; the others, or the
/// main session, take it. It connects holding one of the `logins` permits, until its first
/// reply.
async fn work(
    mut session: Session,
    mut ready: tokio::sync::watch::Receiver<Option<Arc<Shared>>>,
    opts: CopyArgs,
    ui: Ui,
    logins: Arc<tokio::sync::Semaphore>,
) {
    let mut permit = logins.clone().acquire_owned().await.ok();
    let connected = session.connect_ahead().await.is_ok();
    let connected_at = std::time::Instant::now();
    let shared = match ready.wait_for(Option::is_some).await {
        Ok(s) => s.clone(),
        Err(_) => None,
    };
    let Some(shared) = shared.filter(|_| connected) else {
        session.close().await;
        return;
    };
    if connected_at.elapsed() > FRESH_FOR {
        session.drop_connection();
        permit = None;
    }
    let mut served = 0;
    while let Some(job) = shared.next() {
        if !session.is_connected() && permit.is_none() {
            permit = logins.clone().acquire_owned().await.ok();
        }
        let client = match session.client().await {
            Ok(c) => c,
            Err(e) if served == 0 || e.server_code == Some(ErrorCode::Busy) => {
                shared.give_back(job);
                break;
            }
            Err(e) => {
                shared.done(&job, Err(e));
                break;
            }
        };
        served += 1;
        if serve(client, job, &shared, &opts, &ui, permit.take()).await == Served::Lost {
            session.drop_connection();
        }
    }
    session.close().await;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Served {
    Kept,
    /// The connection was lost: the session must connect again.
    Lost,
}

/// Runs `job` on `client`; when it is a small transfer, keeps sending the small transfers that
/// follow it in the queue, up to `AHEAD_MAX` unanswered (CTRL-PUT-8, CTRL-GET-6), so that many
/// small files cost one round trip in all rather than one each. Returns once nothing is in
/// flight. `permit` is released at the first reply: the login is pipelined with the first
/// job (CTRL-AUTH-6), and only that reply shows that the server has answered the login and
/// freed the connection's pre-login slot.
async fn serve(
    client: &mut Client,
    job: Job,
    shared: &Shared,
    opts: &CopyArgs,
    ui: &Ui,
    mut permit: Option<OwnedSemaphorePermit>,
) -> Served {
    if !ahead::goes_ahead(&job, opts) {
        let result = job.run(client, opts, ui).await;
        drop(permit);
        return shared.done_on(&job, result);
    }
    let mut in_flight: VecDeque<(Job, ahead::SentAhead)> = VecDeque::new();
    let mut first = Some(job);
    loop {
        // Refill once half the window is answered, so that the transfers sent leave together
        // in one write rather than one by one as replies arrive.
        if in_flight.len() <= AHEAD_MAX / 2 {
            while in_flight.len() < AHEAD_MAX {
                let Some(job) = first.take().or_else(|| shared.next_if(|j| ahead::goes_ahead(j, opts))) else {
                    break;
                };
                match ahead::send(client, &job, opts, ui).await {
                    Ok(sent) => in_flight.push_back((job, sent)),
                    Err(e) if !client.is_usable() => {
                        shared.done(&job, Err(e));
                        return shared.unanswered(in_flight);
                    }
                    Err(e) => shared.done(&job, Err(e)),
                }
            }
        }
        let Some((job, sent)) = in_flight.pop_front() else { return Served::Kept };
        let result = ahead::finish(client, sent, opts, ui).await;
        permit.take();
        if shared.done_on(&job, result) == Served::Lost || !client.is_usable() {
            return shared.unanswered(in_flight);
        }
    }
}

/// The first failure, or with `--keep-going` how many failed.
fn finish(shared: &Shared) -> Result<u64, CliError> {
    let mut failures = std::mem::take(&mut *lock(&shared.failures));
    match failures.len() {
        0 => Ok(0),
        _ if !shared.keep_going => Err(failures.remove(0)),
        n => Ok(n as u64),
    }
}

/// Runs `jobs` as [`run`] does; failures collected with `--keep-going` end in `Partial`.
pub async fn run_all(
    main: &mut Session,
    helpers: Option<Helpers>,
    jobs: Vec<Job>,
    opts: &CopyArgs,
    ui: &Ui,
) -> Result<(), CliError> {
    let files = jobs.len();
    match run(main, helpers, jobs, opts, ui).await? {
        0 => Ok(()),
        n => Err(CliError::new(ExitCode::Partial, format!("{n} of {files} files failed"))),
    }
}

/// The total bar: in a terminal, unless `-q` or another progress mode; hidden for one file.
fn total_bar(jobs: &[Job], ui: &Ui, workers: usize) -> ProgressBar {
    let show = jobs.len() > 1 && !ui.quiet && ui.progress == ProgressArg::Auto && std::io::stderr().is_terminal();
    if !show {
        return ProgressBar::hidden();
    }
    let bytes = jobs.iter().map(Job::size).sum();
    let bar = ProgressBar::with_draw_target(Some(bytes), ProgressDrawTarget::stderr());
    let template = "total [{bar:30.green/blue}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}";
    bar.set_style(ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()));
    bar.set_message(format!("0/{} files, {workers} at once", jobs.len()));
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
