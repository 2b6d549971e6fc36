//! The drills' load: clients that behave as careful real clients do. Each
//! sends one command at a time and retries it, with the same identity,
//! until it is acknowledged: a board op keeps its `op_id`, a chat message
//! its `client_message_id`, a new lesson its `Idempotency-Key`. So the log
//! must end up holding every command exactly once, whatever the server or
//! its database went through meanwhile.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

/// The passphrase of every drill account.
const PASSWORD: &str = "drill passphrase, long enough";

/// A logged-in account.
#[derive(Debug, Clone)]
pub struct Account {
    /// Its id.
    pub id: Uuid,
    /// Its email.
    pub email: String,
    /// Its access token.
    pub token: String,
}

/// Register an account over HTTP and log it in.
pub async fn account(
    client: &reqwest::Client,
    base: &str,
    email: &str,
    role: &str,
) -> anyhow::Result<Account> {
    let r = client
        .post(format!("{base}/api/v1/auth/register"))
        .json(&json!({"email": email, "password": PASSWORD, "display_name": "Drill", "role": role}))
        .send()
        .await?;
    ensure!(
        r.status() == StatusCode::CREATED,
        "register answered {}",
        r.status()
    );
    let id = r.json::<Value>().await?["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .context("a user id")?;
    Ok(Account {
        id,
        email: email.to_owned(),
        token: login(client, base, email).await?,
    })
}

/// A new session for an existing account: its access token.
pub async fn login(client: &reqwest::Client, base: &str, email: &str) -> anyhow::Result<String> {
    let r = client
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({"email": email, "password": PASSWORD, "device_fingerprint": "drill"}))
        .send()
        .await?;
    ensure!(
        r.status() == StatusCode::OK,
        "login answered {}",
        r.status()
    );
    r.json::<Value>().await?["access_token"]
        .as_str()
        .map(str::to_owned)
        .context("an access token")
}

/// `POST` `body` as `token`; asserts the status.
async fn post(
    client: &reqwest::Client,
    url: String,
    token: &str,
    body: Value,
    want: StatusCode,
) -> anyhow::Result<Value> {
    let r = client
        .post(&url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await?;
    let status = r.status();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    ensure!(status == want, "POST {url} answered {status}: {body}");
    Ok(body)
}

/// A lesson starting tomorrow.
fn lesson(title: &str) -> Value {
    json!({"title": title, "description": "",
           "starts_at": (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339(),
           "duration_minutes": 60, "capacity": 100,
           "price": {"amount_minor": 0, "currency": "eur"}})
}

/// Who takes part: tutors creating lessons, and students drawing and
/// chatting in one live lesson taught by the first tutor.
#[derive(Debug, Clone)]
pub struct Cast {
    /// The tutors.
    pub tutors: Vec<Account>,
    /// The students, enrolled in `lesson`.
    pub students: Vec<Account>,
    /// The live lesson (its board and channel have the same id).
    pub lesson: Uuid,
}

impl Cast {
    /// Register and log in `tutors` tutors and `students` students, and
    /// start a lesson of the first tutor's with every student enrolled.
    pub async fn create(
        client: &reqwest::Client,
        base: &str,
        tutors: usize,
        students: usize,
    ) -> anyhow::Result<Self> {
        let run = Uuid::new_v4().simple().to_string();
        let mut cast = Self {
            tutors: Vec::new(),
            students: Vec::new(),
            lesson: Uuid::nil(),
        };
        for t in 0..tutors.max(1) {
            cast.tutors.push(
                account(
                    client,
                    base,
                    &format!("drill-{run}-t{t}@example.com"),
                    "tutor",
                )
                .await?,
            );
        }
        for s in 0..students {
            cast.students.push(
                account(
                    client,
                    base,
                    &format!("drill-{run}-s{s}@example.com"),
                    "student",
                )
                .await?,
            );
        }
        let tutor = &cast.tutors[0].token;
        let created = post(
            client,
            format!("{base}/api/v1/lessons"),
            tutor,
            lesson("drill live"),
            StatusCode::CREATED,
        )
        .await?;
        cast.lesson = created["id"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .context("a lesson id")?;
        let lesson = cast.lesson;
        for s in &cast.students {
            post(
                client,
                format!("{base}/api/v1/lessons/{lesson}/enrollments"),
                &s.token,
                json!({}),
                StatusCode::CREATED,
            )
            .await?;
        }
        post(
            client,
            format!("{base}/api/v1/lessons/{lesson}/start"),
            tutor,
            json!({}),
            StatusCode::OK,
        )
        .await?;
        Ok(cast)
    }
}

/// The pace of the load. The defaults stay under the policy table's rate
/// limits (students: 500 draw and 60 chat requests a minute; tutors: 20 new
/// lessons an hour), so that every command is meant to be accepted.
#[derive(Debug, Clone)]
pub struct Pace {
    /// Each student sends one request per this interval.
    pub student_every: Duration,
    /// Ops in one board request.
    pub batch: usize,
    /// Every this many requests of a student's is a chat message instead.
    pub chat_every: u64,
    /// Each tutor creates this many lessons, spread evenly over the run
    /// (their first tick is at the start), and staggered between tutors.
    pub lessons_per_tutor: u64,
}

impl Default for Pace {
    fn default() -> Self {
        Self {
            student_every: Duration::from_millis(150),
            batch: 10,
            chat_every: 8,
            lessons_per_tutor: 10,
        }
    }
}

/// What the clients saw and what the server acknowledged.
#[derive(Debug, Default)]
pub struct Tally {
    /// Answers by status code, and `transport` for requests that got none
    /// (connection refused or reset).
    pub statuses: BTreeMap<String, u64>,
    /// Acknowledged board ops: `(client_id, op_id)`.
    pub ops: Vec<(String, String)>,
    /// Acknowledged chat messages: their `client_message_id`s.
    pub messages: Vec<String>,
    /// Acknowledged new lessons: `(title, id)`.
    pub lessons: Vec<(String, Uuid)>,
    /// Ops the board rejected (none should be).
    pub rejected_ops: u64,
    /// Commands still unacknowledged when the clients gave up.
    pub abandoned: u64,
    /// Answers no retry can change (a 4xx other than 409 and 429), with
    /// their bodies: none should occur.
    pub refused: Vec<String>,
    /// When each acknowledgement arrived, in seconds from the start.
    pub acked_at: Vec<f64>,
    /// The slowest answer, in ms (the clients' request timeout is 10 s).
    pub slowest_ms: f64,
    /// Answers slower than 1.5 s, by command and status.
    pub slow_answers: BTreeMap<String, u64>,
}

impl Tally {
    /// Acknowledged commands of every kind.
    pub fn acknowledged(&self) -> usize {
        self.ops.len() + self.messages.len() + self.lessons.len()
    }

    /// Answers with a 5xx status other than 503.
    pub fn server_errors_other_than_503(&self) -> u64 {
        self.statuses
            .iter()
            .filter(|(s, _)| s.starts_with('5') && s.as_str() != "503")
            .map(|(_, n)| n)
            .sum()
    }

    /// Seconds from `after` to the first acknowledgement after it.
    pub fn first_ack_after(&self, after: f64) -> Option<f64> {
        self.acked_at
            .iter()
            .copied()
            .filter(|t| *t >= after)
            .reduce(f64::min)
            .map(|t| t - after)
    }
}

/// Requests awaiting their answers.
#[derive(Debug, Default)]
struct InFlight {
    lessons: AtomicUsize,
    others: AtomicUsize,
}

/// The running load: `stop` ends new commands; the clients then retry what
/// they have in flight until `give_up`.
pub struct Load {
    tally: Arc<Mutex<Tally>>,
    in_flight: Arc<InFlight>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// When the load started.
    pub started: Instant,
}

/// One client's view of the run.
#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
    tally: Arc<Mutex<Tally>>,
    in_flight: Arc<InFlight>,
    started: Instant,
    stop: Instant,
    give_up: Instant,
}

impl Client {
    /// Send the request `build` makes until it is acknowledged (a 2xx), or
    /// until the run gives up; the acknowledgement's body.
    async fn until_acked(
        &self,
        what: &str,
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Option<Value> {
        loop {
            if Instant::now() > self.give_up {
                self.tally().abandoned += 1;
                return None;
            }
            let sent = Instant::now();
            let counter = if what == "lesson" {
                &self.in_flight.lessons
            } else {
                &self.in_flight.others
            };
            counter.fetch_add(1, Ordering::SeqCst);
            let answer = build(&self.http).bearer_auth(&self.token).send().await;
            counter.fetch_sub(1, Ordering::SeqCst);
            let ms = sent.elapsed().as_secs_f64() * 1000.0;
            let (status, retry_after) = match &answer {
                Err(_) => ("transport".to_owned(), None),
                Ok(r) => (
                    r.status().as_str().to_owned(),
                    r.headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok()),
                ),
            };
            {
                let mut tally = self.tally();
                if answer.is_ok() {
                    tally.slowest_ms = tally.slowest_ms.max(ms);
                    if ms > 1500.0 {
                        *tally
                            .slow_answers
                            .entry(format!("{what} {status}"))
                            .or_default() += 1;
                    }
                }
                *tally.statuses.entry(status).or_default() += 1;
            }
            let pause = match answer {
                Ok(r) if r.status().is_success() => {
                    let body = r.json::<Value>().await.ok();
                    if body.is_some() {
                        self.tally()
                            .acked_at
                            .push(self.started.elapsed().as_secs_f64());
                        return body;
                    }
                    // The connection died mid-answer: unacknowledged.
                    Duration::from_millis(50)
                }
                Ok(r)
                    if matches!(r.status().as_u16(), 409 | 429) || r.status().is_server_error() =>
                {
                    Duration::from_secs(retry_after.unwrap_or(0).min(2))
                        .max(Duration::from_millis(50))
                }
                Ok(r) => {
                    let status = r.status();
                    let body = r.text().await.unwrap_or_default();
                    self.tally().refused.push(format!("{status}: {body}"));
                    return None;
                }
                Err(_) => Duration::from_millis(50),
            };
            tokio::time::sleep(pause).await;
        }
    }

    fn tally(&self) -> std::sync::MutexGuard<'_, Tally> {
        self.tally
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A student: board op batches on the live lesson, every `chat_every`th
    /// request a chat message instead.
    async fn student(self, n: usize, lesson: Uuid, pace: Pace) {
        let ops_url = format!("{}/api/v1/boards/{lesson}/ops/batch", self.base);
        let chat_url = format!("{}/api/v1/lessons/{lesson}/messages", self.base);
        let client_id = format!("drill-s{n}");
        let mut tick = tokio::time::interval(pace.student_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (mut requests, mut op) = (0u64, 0u64);
        while Instant::now() < self.stop {
            tick.tick().await;
            requests += 1;
            if requests % pace.chat_every == 0 {
                let id = format!("s{n}-m{requests}");
                let body = json!({"client_message_id": id, "text": "drill"});
                if self
                    .until_acked("chat", |c| c.post(&chat_url).json(&body))
                    .await
                    .is_some()
                {
                    self.tally().messages.push(id);
                }
                continue;
            }
            // Each student adds 50 elements, then keeps moving them.
            let ops: Vec<Value> = (0..pace.batch)
                .map(|_| {
                    op += 1;
                    let kind = if op <= 50 { "add" } else { "move" };
                    json!({"client_id": client_id, "op_id": op.to_string(), "lamport": op, "kind": kind,
                           "element_id": format!("s{n}-e{}", op % 50), "data": {"x": op}})
                })
                .collect();
            let body = json!({"ops": ops});
            let Some(answer) = self
                .until_acked("ops", |c| c.post(&ops_url).json(&body))
                .await
            else {
                continue;
            };
            let mut tally = self.tally();
            for result in answer["results"].as_array().into_iter().flatten() {
                match (result["status"].as_str(), result["op_id"].as_str()) {
                    (Some("applied" | "duplicate"), Some(op_id)) => {
                        tally.ops.push((client_id.clone(), op_id.to_owned()))
                    }
                    _ => tally.rejected_ops += 1,
                }
            }
        }
    }

    /// A tutor: new lessons, each with an `Idempotency-Key` and a title
    /// naming the command, so the log shows whether one ran twice.
    async fn tutor(self, n: usize, tutors: usize, run: String, pace: Pace) {
        let url = format!("{}/api/v1/lessons", self.base);
        let every = self
            .stop
            .duration_since(self.started)
            .div_f64(pace.lessons_per_tutor.max(1) as f64);
        let first = self.started + every.mul_f64(n as f64 / tutors.max(1) as f64);
        let mut tick = tokio::time::interval_at(first.into(), every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for k in 0..pace.lessons_per_tutor {
            tick.tick().await;
            if Instant::now() >= self.stop {
                break;
            }
            let title = format!("drill {run} t{n}-l{k}");
            let (key, body) = (format!("{run}-t{n}-l{k}"), lesson(&title));
            let answer = self
                .until_acked("lesson", |c| {
                    c.post(&url).header("idempotency-key", &key).json(&body)
                })
                .await;
            if let Some(id) = answer.and_then(|a| a["id"].as_str().and_then(|s| s.parse().ok())) {
                self.tally().lessons.push((title, id));
            }
        }
    }
}

impl Load {
    /// Start every client of `cast` against `base`: new commands for
    /// `seconds`, then retries of the unacknowledged ones for up to `drain`.
    pub fn start(
        base: &str,
        cast: &Cast,
        pace: &Pace,
        seconds: f64,
        drain: Duration,
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        let started = Instant::now();
        let stop = started + Duration::from_secs_f64(seconds);
        let tally = Arc::new(Mutex::new(Tally::default()));
        let in_flight = Arc::new(InFlight::default());
        let client = |token: &str| Client {
            in_flight: Arc::clone(&in_flight),
            http: http.clone(),
            base: base.to_owned(),
            token: token.to_owned(),
            tally: Arc::clone(&tally),
            started,
            stop,
            give_up: stop + drain,
        };
        let run = Uuid::new_v4().simple().to_string();
        let mut tasks = Vec::new();
        for (n, s) in cast.students.iter().enumerate() {
            tasks.push(tokio::spawn(client(&s.token).student(
                n,
                cast.lesson,
                pace.clone(),
            )));
        }
        for (n, t) in cast.tutors.iter().enumerate() {
            tasks.push(tokio::spawn(client(&t.token).tutor(
                n,
                cast.tutors.len(),
                run.clone(),
                pace.clone(),
            )));
        }
        Ok(Self {
            tally,
            in_flight,
            tasks,
            started,
        })
    }

    /// Wait until a request awaits its answer, preferably a new lesson's
    /// (the command whose retry depends on `Idempotency-Key` alone): up to
    /// 1.5 s for one, then up to a second for any. What is in flight then.
    pub async fn until_in_flight(&self) -> &'static str {
        let started = Instant::now();
        loop {
            let waited = started.elapsed();
            if self.in_flight.lessons.load(Ordering::SeqCst) > 0 {
                return "a new lesson";
            }
            if waited > Duration::from_millis(1500)
                && self.in_flight.others.load(Ordering::SeqCst) > 0
            {
                return "a board or chat request";
            }
            if waited > Duration::from_millis(2500) {
                return "nothing";
            }
            tokio::task::yield_now().await;
        }
    }

    /// Seconds since the load started.
    pub fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Wait for every client to finish; what they saw.
    pub async fn finish(self) -> anyhow::Result<Tally> {
        for task in self.tasks {
            task.await.context("a drill client panicked")?;
        }
        let tally = Arc::try_unwrap(self.tally)
            .map_err(|_| anyhow::anyhow!("a client still holds the tally"))?
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(tally)
    }
}
