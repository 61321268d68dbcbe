//! Test harness: a real moto_server (Secrets Manager + SNS), the Entra
//! simulator, and the real adapters wired as in production. No mocks.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Write;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use aws_sdk_secretsmanager::config::Credentials;
use entra_sim::aws_proxy::AwsProxy;
use entra_sim::{Sim, SimConfig};
use jiff::Timestamp;
use scim_relay::adapters::aws::{AwsSecretStore, SnsNotifier};
use scim_relay::adapters::graph::RetryPolicy;
use scim_relay::core::config::Defaults;
use scim_relay::core::ports::{Notifier, SecretStore};
use scim_relay::core::renew::Outcome;
use scim_relay::lambda::handler::{decode, Decoded};
use scim_relay::lambda::relay::{Relay, RunReport};
use serde_json::Value;

pub const TENANT: &str = "11111111-2222-3333-4444-555555555555";
pub const CLIENT_ID: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";
pub const SP: &str = "99999999-8888-7777-6666-555555555555";
pub const JOB: &str = "Apple.0a1b2c3d4e5f.9f8e7d6c5b4a";
/// Every secret in the suite contains this marker; none may ever be printed.
pub const CANARY: &str = "CANARY-";
pub const CLIENT_SECRET: &str = "CANARY-graph-client-secret";

// ------------------------------------------------------------- logging --

/// Every log line of the whole test binary, at TRACE.
pub fn logs() -> &'static Mutex<Vec<u8>> {
    static LOGS: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();
    LOGS.get_or_init(|| Mutex::new(Vec::new()))
}

struct LogWriter;
impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        logs().lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn init_logging() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(|| LogWriter)
            .with_ansi(false)
            .try_init();
    });
}

pub fn log_text() -> String {
    String::from_utf8_lossy(&logs().lock().unwrap()).into_owned()
}

// ---------------------------------------------------------------- moto --

struct Moto {
    url: String,
    _child: Child,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn venv_bin(name: &str) -> String {
    let venv = std::env::var("SCIM_RELAY_VENV").unwrap_or_else(|_| format!("{}/.venv", env!("CARGO_MANIFEST_DIR")));
    let path = format!("{venv}/bin/{name}");
    assert!(
        std::path::Path::new(&path).exists(),
        "{path} is missing: run ./scripts/test.sh (it creates the venv), or ./scripts/venv.sh first"
    );
    path
}

/// One moto_server per test binary. A tiny Python watchdog kills it when
/// this test process exits, so no server outlives the tests.
fn moto() -> &'static str {
    static MOTO: OnceLock<Moto> = OnceLock::new();
    &MOTO
        .get_or_init(|| {
            let port = free_port();
            let watchdog = r#"
import os, subprocess, sys, time
p = subprocess.Popen([sys.executable, sys.argv[1], "-H", "127.0.0.1", "-p", sys.argv[2]], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
parent = os.getppid()
try:
    while os.getppid() == parent and p.poll() is None:
        time.sleep(0.3)
finally:
    p.kill()
"#;
            // Kept for the life of the test process; the watchdog ends with it.
            #[allow(clippy::zombie_processes)]
            let child = Command::new(venv_bin("python"))
                .args(["-c", watchdog, concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/moto_server.py"), &port.to_string()])
                .stdin(Stdio::null())
                .spawn()
                .expect("start moto_server");
            let url = format!("http://127.0.0.1:{port}");
            for _ in 0..200 {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Moto { url, _child: child };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            panic!("moto_server did not start on port {port}");
        })
        .url
}

pub async fn aws_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(moto())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "tests"))
        .load()
        .await
}

/// The relay's SDK configuration: through the fault proxy, with timeouts
/// and retry backoff scaled down for tests (same shape as production).
pub async fn relay_aws_config(endpoint: &str) -> aws_config::SdkConfig {
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_millis(500))
        .operation_attempt_timeout(Duration::from_millis(700))
        .operation_timeout(Duration::from_secs(4))
        .build();
    let retry = aws_config::retry::RetryConfig::standard()
        .with_max_attempts(3)
        .with_initial_backoff(Duration::from_millis(20))
        .with_max_backoff(Duration::from_millis(200));
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "tests"))
        .timeout_config(timeouts)
        .retry_config(retry)
        .load()
        .await
}

// ------------------------------------------------------------- harness --

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// One scenario's world: its own simulator, secrets, topic and clock.
pub struct World {
    pub sim: Sim,
    /// Between the relay's AWS SDK and moto: injects AWS-side faults.
    pub proxy: AwsProxy,
    /// The SDK configuration the relay uses (through the proxy).
    pub relay_aws: aws_config::SdkConfig,
    pub sm: aws_sdk_secretsmanager::Client,
    pub sns: aws_sdk_sns::Client,
    pub aws: aws_config::SdkConfig,
    pub topic_arn: String,
    pub prefix: String,
    pub secret_ids: Vec<String>,
    pub client_secret_id: String,
    pub now: Arc<AtomicI64>,
    pub env: HashMap<String, String>,
}

impl World {
    /// A world with one target secret (not yet holding a value) and a job.
    pub async fn new(name: &str) -> World {
        Self::with_targets(name, 1).await
    }

    /// `n` targets, each holding a new token that Entra accepts, processed
    /// with `SCIM_RELAY_CONCURRENCY=concurrency`.
    pub async fn with_new_tokens(name: &str, n: usize, concurrency: usize) -> World {
        let mut w = Self::with_targets(name, n).await;
        w.env.insert("SCIM_RELAY_CONCURRENCY".into(), concurrency.to_string());
        for (i, id) in w.secret_ids.iter().enumerate() {
            let t = w.token(&format!("t{i}"));
            w.sim.accept_token(&t);
            w.put_to(id, &t).await;
        }
        w
    }

    /// A world whose target holds an applied token: a token labelled
    /// `first`, stored as `{"token", "expires_at"}` and applied by one sync,
    /// with the clock `days_left` days before `expires_at` (None: now).
    /// Returns (world, token, version); the simulator's request log starts
    /// empty after the apply.
    pub async fn with_applied(name: &str, expires_at: &str, days_left: Option<f64>) -> (World, String, String) {
        let w = Self::new(name).await;
        if let Some(days) = days_left {
            w.set_days_before(expires_at, days);
        }
        let (t, v) = w.apply_token("first", expires_at).await;
        w.sim.clear_requests();
        (w, t, v)
    }

    pub async fn with_targets(name: &str, n: usize) -> World {
        init_logging();
        let sim = Sim::start(SimConfig {
            client_id: CLIENT_ID.into(),
            client_secret: CLIENT_SECRET.into(),
            token_lifetime_secs: 3599,
            ..SimConfig::default()
        })
        .await
        .expect("start the Entra simulator");
        sim.add_job(SP, JOB, "Active");
        let aws = aws_config().await;
        let proxy = AwsProxy::start(moto()).await.expect("start the AWS fault proxy");
        let relay_aws = relay_aws_config(&proxy.url()).await;
        let sm = aws_sdk_secretsmanager::Client::new(&aws);
        let sns = aws_sdk_sns::Client::new(&aws);
        let prefix = format!("t{}-{}", COUNTER.fetch_add(1, Ordering::SeqCst), name);
        let client_secret_id = format!("{prefix}/graph");
        sm.create_secret().name(&client_secret_id).secret_string(CLIENT_SECRET).send().await.unwrap();
        let mut secret_ids = Vec::new();
        for i in 0..n {
            let id = if n == 1 { format!("{prefix}/abm") } else { format!("{prefix}/abm{i}") };
            sm.create_secret().name(&id).send().await.unwrap();
            secret_ids.push(id);
        }
        let topic_arn = sns
            .create_topic()
            .name(format!("{prefix}-alerts").replace('/', "-"))
            .send()
            .await
            .unwrap()
            .topic_arn
            .unwrap();
        sns.subscribe()
            .topic_arn(&topic_arn)
            .protocol("http")
            .endpoint(format!("{}/sns-sink", sim.url()))
            .send()
            .await
            .unwrap();
        let env: HashMap<String, String> = [
            ("SCIM_RELAY_SECRET_IDS", secret_ids.join(",")),
            ("ENTRA_TENANT_ID", TENANT.to_owned()),
            ("ENTRA_CLIENT_ID", CLIENT_ID.to_owned()),
            ("ENTRA_CLIENT_SECRET_ID", client_secret_id.clone()),
            ("ENTRA_SERVICE_PRINCIPAL_ID", SP.to_owned()),
            ("ENTRA_JOB_ID", JOB.to_owned()),
            ("GRAPH_ENDPOINT", sim.url()),
            ("LOGIN_ENDPOINT", sim.url()),
            ("ALERT_TOPIC_ARN", topic_arn.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let now = Arc::new(AtomicI64::new(Timestamp::now().as_second()));
        World { sim, proxy, relay_aws, sm, sns, aws, topic_arn, prefix, secret_ids, client_secret_id, now, env }
    }

    pub fn id(&self) -> &str {
        &self.secret_ids[0]
    }

    /// A unique canary token for this world.
    pub fn token(&self, label: &str) -> String {
        format!("{CANARY}{}-{label}", self.prefix.replace('/', "-"))
    }

    pub fn relay(&self) -> Relay {
        let defaults = Defaults::from_vars(&self.env).expect("test configuration is valid");
        let store: Arc<dyn SecretStore> = Arc::new(AwsSecretStore::new(&self.relay_aws));
        let notifier: Option<Arc<dyn Notifier>> = defaults
            .alert_topic_arn
            .clone()
            .map(|arn| Arc::new(SnsNotifier::new(&self.relay_aws, arn)) as Arc<dyn Notifier>);
        let retry = RetryPolicy {
            min_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(300),
            max_retries: 4,
            request_timeout: Duration::from_millis(800),
        };
        let now = self.now.clone();
        Relay::new(
            defaults,
            store,
            notifier,
            retry,
            Arc::new(move || Timestamp::from_second(now.load(Ordering::SeqCst)).unwrap()),
        )
        .expect("build relay")
    }

    /// Stores a new version (AWSCURRENT) and returns its version ID.
    pub async fn put(&self, value: &str) -> String {
        self.put_to(self.id(), value).await
    }

    pub async fn put_to(&self, id: &str, value: &str) -> String {
        self.sm.put_secret_value().secret_id(id).secret_string(value).send().await.unwrap().version_id.unwrap()
    }

    /// Stores a new token (one Entra accepts) as `{"token", "expires_at"}`
    /// in the first target. Returns (token, version).
    pub async fn put_token(&self, label: &str, expires_at: &str) -> (String, String) {
        self.put_token_to(self.id(), label, expires_at).await
    }

    /// Like [`World::put_token`], in target `id`.
    pub async fn put_token_to(&self, id: &str, label: &str, expires_at: &str) -> (String, String) {
        let t = self.token(label);
        self.sim.accept_token(&t);
        let v = self.put_to(id, &serde_json::json!({"token": t, "expires_at": expires_at}).to_string()).await;
        (t, v)
    }

    /// Stores a new token in the first target and applies it with one sync
    /// (asserting that it was applied). Returns (token, version).
    pub async fn apply_token(&self, label: &str, expires_at: &str) -> (String, String) {
        let (t, v) = self.put_token(label, expires_at).await;
        let r = self.sync().await;
        assert_eq!(r.results[0].outcome, Outcome::Applied, "{}", r.results[0].message);
        (t, v)
    }

    /// Runs one invocation as the Lambda handler would, from a JSON payload.
    pub async fn invoke(&self, payload: Value) -> Result<RunReport, String> {
        self.invoke_on(&self.relay(), payload, Duration::from_secs(60)).await
    }

    /// Like [`World::invoke`], with a given relay and time left.
    pub async fn invoke_on(&self, relay: &Relay, payload: Value, time_left: Duration) -> Result<RunReport, String> {
        let req = match decode(&payload, &relay.defaults).map_err(|e| e.to_string())? {
            Decoded::Run(req) => req,
            Decoded::Ignore(why) => return Err(format!("ignored: {why}")),
            Decoded::Queue(_) => return Err("an SQS event: use scim_relay::lambda::queue::run_queue_batch".into()),
        };
        let deadline = tokio::time::Instant::now() + time_left;
        let report = relay.run(&req, Some(deadline)).await;
        let text = serde_json::to_string(&report).unwrap();
        assert!(!text.contains(CANARY), "a secret leaked into the result");
        if let Some(e) = report.error_summary() {
            assert!(!e.contains(CANARY), "a secret leaked into the error");
        }
        Ok(report)
    }

    /// Decodes a payload as the handler does, without running it.
    pub fn decode(&self, payload: &Value) -> Result<Decoded, String> {
        let defaults = Defaults::from_vars(&self.env).expect("test configuration is valid");
        decode(payload, &defaults).map_err(|e| e.to_string())
    }

    /// Moves the clock to `days` days before `expiry` (RFC 3339).
    pub fn set_days_before(&self, expiry: &str, days: f64) {
        let at: Timestamp = expiry.parse().unwrap();
        self.now.store(at.as_second() - (days * 86_400.0) as i64, Ordering::SeqCst);
    }

    pub async fn sync(&self) -> RunReport {
        self.invoke(serde_json::json!({})).await.unwrap()
    }

    /// Staging labels of every version.
    pub async fn labels(&self) -> HashMap<String, Vec<String>> {
        self.labels_of(self.id()).await
    }

    pub async fn labels_of(&self, id: &str) -> HashMap<String, Vec<String>> {
        self.sm.describe_secret().secret_id(id).send().await.unwrap().version_ids_to_stages.unwrap_or_default()
    }

    pub async fn version_with(&self, label: &str) -> Option<String> {
        self.labels().await.into_iter().find(|(_, ls)| ls.iter().any(|l| l == label)).map(|(v, _)| v)
    }

    pub async fn tags(&self) -> HashMap<String, String> {
        self.tags_of(self.id()).await
    }

    /// The tags of any secret (a target, or the relay's own credential).
    pub async fn tags_of(&self, id: &str) -> HashMap<String, String> {
        self.sm
            .describe_secret()
            .secret_id(id)
            .send()
            .await
            .unwrap()
            .tags
            .unwrap_or_default()
            .into_iter()
            .map(|t| (t.key.unwrap_or_default(), t.value.unwrap_or_default()))
            .collect()
    }

    /// SNS notifications delivered so far: (subject, body).
    pub async fn alerts(&self) -> Vec<(String, String)> {
        // moto delivers synchronously during Publish; allow a moment anyway.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let msgs: Vec<(String, String)> = self
            .sim
            .sns_messages()
            .iter()
            .map(|m| {
                (
                    m.get("Subject").and_then(Value::as_str).unwrap_or_default().to_owned(),
                    m.get("Message").and_then(Value::as_str).unwrap_or_default().to_owned(),
                )
            })
            .collect();
        for (s, b) in &msgs {
            assert!(!s.contains(CANARY) && !b.contains(CANARY), "a secret leaked into an alert");
        }
        msgs
    }

    /// Requests that change Entra (PUT secrets, start, restart).
    pub fn entra_writes(&self) -> usize {
        use entra_sim::Route;
        self.sim
            .requests()
            .iter()
            .filter(|r| matches!(r.route, Some(Route::PutSecrets | Route::Start | Route::Restart)))
            .count()
    }

    /// Whether the token Entra holds passed Test Connection after it was
    /// last saved (a PUT of it answered, then `useSavedCredentials: true`
    /// answered 204). A token never saved by PUT counts as tested.
    pub fn saved_token_was_retested(&self) -> bool {
        use entra_sim::Route;
        let Some(token) = self.saved_token() else { return true };
        let requests = self.sim.requests();
        let Some(put) = requests
            .iter()
            .rposition(|r| r.route == Some(Route::PutSecrets) && r.status == 204 && r.body.contains(&token))
        else {
            return true;
        };
        requests[put..].iter().any(|r| {
            r.route == Some(Route::ValidateCredentials)
                && r.status == 204
                && r.body.contains("\"useSavedCredentials\":true")
        })
    }

    pub fn saved_token(&self) -> Option<String> {
        self.sim.saved_credentials(SP).map(|(_, t)| t)
    }

    pub fn assert_no_leaks(&self) {
        let logs = log_text();
        assert!(!logs.contains(CANARY), "a secret leaked into the logs");
        assert!(!logs.contains("sim-at-"), "a Graph access token leaked into the logs");
    }
}

// ------------------------------------------------------- real binary --

/// Lambda's error document, as the runtime posted it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LambdaError {
    pub error_type: String,
    pub error_message: String,
}

/// One invocation of the real `scim-relay` binary.
#[derive(Debug)]
pub struct Invocation {
    pub result: Result<Value, LambdaError>,
    /// What the process printed on stdout (EMF metric documents) and
    /// stderr (its logs).
    pub stdout: String,
    pub stderr: String,
}

impl Invocation {
    /// The handler's JSON result; panics (with the error) if it failed.
    pub fn report(&self) -> &Value {
        match &self.result {
            Ok(v) => v,
            Err(e) => panic!("the invocation failed: {e:?}\nlogs:\n{}", self.stderr),
        }
    }

    /// The invocation's error; panics if it succeeded.
    pub fn error(&self) -> &LambdaError {
        match &self.result {
            Err(e) => e,
            Ok(v) => panic!("the invocation succeeded: {v}"),
        }
    }

    /// `results[i].outcome` of the report (or of a failed run's logs: a
    /// failed invocation returns no result document).
    pub fn outcomes(&self) -> Vec<String> {
        self.report()["results"]
            .as_array()
            .map(|rs| rs.iter().map(|r| r["outcome"].as_str().unwrap_or_default().to_owned()).collect())
            .unwrap_or_default()
    }

    /// The Embedded Metric Format documents printed on stdout.
    pub fn emf(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v.get("_aws").is_some())
            .collect()
    }
}

impl World {
    /// Runs the real binary for one event, as Lambda would: through a
    /// Runtime API emulator, with this world's environment, AWS pointed at
    /// moto (through the fault proxy) and 60 s until the deadline.
    pub async fn invoke_binary(&self, payload: Value) -> Invocation {
        self.invoke_binary_env(payload, &[]).await
    }

    /// Like [`World::invoke_binary`], with extra (or overriding, or with an
    /// empty value removed) environment variables.
    pub async fn invoke_binary_env(&self, payload: Value, extra_env: &[(&str, &str)]) -> Invocation {
        self.invoke_binary_seq(vec![payload], extra_env).await.pop().expect("one invocation")
    }

    /// Several invocations of one process (a warm function), in order. Each
    /// [`Invocation`] holds the whole process's stdout and stderr.
    pub async fn invoke_binary_seq(&self, payloads: Vec<Value>, extra_env: &[(&str, &str)]) -> Vec<Invocation> {
        use tokio::io::AsyncReadExt;
        let runtime = entra_sim::runtime::RuntimeApi::start().await.expect("start the Runtime API emulator");
        let mut env: HashMap<String, String> = self.env.clone();
        for (k, v) in [
            ("AWS_LAMBDA_RUNTIME_API", runtime.address()),
            ("AWS_ENDPOINT_URL", self.proxy.url()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_LAMBDA_FUNCTION_NAME", "scim-relay-test".into()),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".into()),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128".into()),
            ("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/scim-relay-test".into()),
            ("AWS_LAMBDA_LOG_STREAM_NAME", "test".into()),
            ("RUST_LOG", "info".into()),
        ] {
            env.insert(k.to_owned(), v);
        }
        for (k, v) in extra_env {
            if v.is_empty() {
                env.remove(*k);
            } else {
                env.insert((*k).to_owned(), (*v).to_owned());
            }
        }
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_scim-relay"));
        cmd.env_clear()
            .envs(&env)
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("start the scim-relay binary");
        let mut out = child.stdout.take().unwrap();
        let mut err = child.stderr.take().unwrap();
        let read_out = tokio::spawn(async move {
            let mut s = Vec::new();
            let _ = out.read_to_end(&mut s).await;
            String::from_utf8_lossy(&s).into_owned()
        });
        let read_err = tokio::spawn(async move {
            let mut s = Vec::new();
            let _ = err.read_to_end(&mut s).await;
            String::from_utf8_lossy(&s).into_owned()
        });
        let mut answers = Vec::new();
        for payload in payloads {
            answers.push(runtime.invoke(payload, Duration::from_secs(60)).await);
        }
        let _ = child.kill().await;
        let stdout = read_out.await.unwrap_or_default();
        let stderr = read_err.await.unwrap_or_default();
        answers
            .into_iter()
            .map(|answer| {
                let result = match answer {
                    Some(entra_sim::runtime::Answer::Response(v)) => Ok(v),
                    Some(entra_sim::runtime::Answer::Error(e)) => Err(LambdaError {
                        error_type: e["errorType"].as_str().unwrap_or_default().to_owned(),
                        error_message: e["errorMessage"].as_str().unwrap_or_default().to_owned(),
                    }),
                    None => panic!("the binary gave no answer within the deadline\nstderr:\n{stderr}"),
                };
                Self::checked(Invocation { result, stdout: stdout.clone(), stderr: stderr.clone() })
            })
            .collect()
    }

    /// No secret in anything the binary printed or answered.
    fn checked(inv: Invocation) -> Invocation {
        for (what, text) in [("stdout", &inv.stdout), ("stderr", &inv.stderr)] {
            assert!(!text.contains(CANARY), "a secret leaked into the binary's {what}");
            assert!(!text.contains("sim-at-"), "a Graph access token leaked into the binary's {what}");
        }
        match &inv.result {
            Ok(v) => assert!(!v.to_string().contains(CANARY), "a secret leaked into the result"),
            Err(e) => assert!(
                !e.error_message.contains(CANARY) && !e.error_type.contains(CANARY),
                "a secret leaked into the invocation error"
            ),
        }
        inv
    }
}
