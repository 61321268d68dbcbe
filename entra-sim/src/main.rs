//! `entra-sim` binary: runs the simulator for the local demo.
//!
//! ```text
//! entra-sim [--listen 127.0.0.1:8765] [--client-id ID] [--client-secret S]
//!           [--token-lifetime SECS] [--job SP/JOB[=Code]]... [--accept-all]
//!           [--saved-token TOKEN] [--latency-ms MS] [--throttle-every N [--throttle-burst B]
//!           [--throttle-retry-after SECS]]
//! ```

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use entra_sim::{Fault, Route, Sim, SimConfig, Throttle};
use tracing_subscriber::EnvFilter;

const USAGE: &str = "\
usage: entra-sim [--listen ADDR] [--client-id ID] [--client-secret SECRET]
                 [--token-lifetime SECS] [--job SP/JOB[=Code]]... [--accept-all]
                 [--saved-token TOKEN] [--latency-ms MS] [--throttle-every N [--throttle-burst B]
                 [--throttle-retry-after SECS]]

  --listen ADDR          address to bind (default 127.0.0.1:8765)
  --client-id ID         accepted client_id (default sim-client-id)
  --client-secret S      accepted client_secret (default sim-client-secret)
  --token-lifetime SECS  access token lifetime (default 3599)
  --job SP/JOB[=Code]    add a synchronization job (Code defaults to Active)
  --accept-all           \"Apple\" accepts every SCIM token not explicitly refused
  --saved-token TOKEN    every --job's service principal starts with this token (and
                         the ABM Tenant URL) saved, as if it were applied earlier
  --latency-ms MS        answer every Graph/login request MS milliseconds late
  --throttle-every N     of every N Graph/login requests, answer the last B with 429
  --throttle-burst B     how many per period (default 1; less than N)
  --throttle-retry-after SECS
                         Retry-After of the throttled answers (default 1; 0: none)";

/// A job given with `--job SP/JOB[=Code]`.
#[derive(Debug, PartialEq, Eq)]
struct JobArg {
    sp: String,
    job: String,
    code: String,
}

#[derive(Debug, PartialEq, Eq)]
struct Args {
    listen: SocketAddr,
    config: SimConfig,
    jobs: Vec<JobArg>,
    accept_all: bool,
    saved_token: Option<String>,
    latency_ms: Option<u64>,
    throttle: Option<Throttle>,
}

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
enum Command {
    Run(Box<Args>),
    Help,
}

fn parse_job(spec: &str) -> Result<JobArg, String> {
    let (path, code) = spec.split_once('=').unwrap_or((spec, "Active"));
    match path.split_once('/') {
        Some((sp, job)) if !sp.is_empty() && !job.is_empty() && !code.is_empty() => {
            Ok(JobArg { sp: sp.to_owned(), job: job.to_owned(), code: code.to_owned() })
        }
        _ => Err(format!("--job expects SP/JOB[=Code], got '{spec}'")),
    }
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Command, String> {
    let mut parsed = Args {
        listen: SocketAddr::from(([127, 0, 0, 1], 8765)),
        config: SimConfig::default(),
        jobs: Vec::new(),
        accept_all: false,
        saved_token: None,
        latency_ms: None,
        throttle: None,
    };
    let (mut every, mut burst, mut retry_after, mut throttle_detail) = (None, 1u64, 1u64, false);
    let number = |flag: &str, v: String| v.parse::<u64>().map_err(|_| format!("{flag} expects a number, got '{v}'"));
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        // Accept both `--flag value` and `--flag=value`.
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag.to_owned(), Some(value.to_owned())),
            _ => (arg.clone(), None),
        };
        let mut value = || inline.clone().or_else(|| args.next()).ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--listen" => {
                let v = value()?;
                parsed.listen = v.parse().map_err(|_| format!("--listen expects IP:PORT, got '{v}'"))?;
            }
            "--client-id" => parsed.config.client_id = value()?,
            "--client-secret" => parsed.config.client_secret = value()?,
            "--token-lifetime" => {
                let v = value()?;
                parsed.config.token_lifetime_secs =
                    v.parse().map_err(|_| format!("--token-lifetime expects seconds, got '{v}'"))?;
            }
            "--job" => parsed.jobs.push(parse_job(&value()?)?),
            "--accept-all" if inline.is_none() => parsed.accept_all = true,
            "--saved-token" => parsed.saved_token = Some(value()?),
            "--latency-ms" => parsed.latency_ms = Some(number(&flag, value()?)?),
            "--throttle-every" => every = Some(number(&flag, value()?)?),
            "--throttle-burst" => (burst, throttle_detail) = (number(&flag, value()?)?, true),
            "--throttle-retry-after" => (retry_after, throttle_detail) = (number(&flag, value()?)?, true),
            _ => return Err(format!("unknown argument '{arg}'")),
        }
    }
    parsed.throttle = match every {
        None if throttle_detail => {
            return Err("--throttle-burst and --throttle-retry-after need --throttle-every".into())
        }
        None => None,
        Some(every) if burst == 0 || burst >= every => {
            return Err(format!("--throttle-burst must be at least 1 and less than --throttle-every ({every})"))
        }
        Some(every) => Some(Throttle { every, burst, retry_after: (retry_after > 0).then_some(retry_after) }),
    };
    Ok(Command::Run(Box::new(parsed)))
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Command::Run(args)) => args,
        Ok(Command::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("entra-sim: error: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("entra_sim=info")))
        .init();

    let sim = match Sim::start_on(args.listen, args.config).await {
        Ok(sim) => sim,
        Err(error) => {
            eprintln!("entra-sim: error: cannot listen on {}: {error}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    for job in &args.jobs {
        sim.add_job(&job.sp, &job.job, &job.code);
        if let Some(token) = &args.saved_token {
            sim.set_saved_credentials(&job.sp, "https://federation.apple.com/feeds/business/scim", token);
        }
    }
    sim.set_accept_all(args.accept_all);
    if let Some(ms) = args.latency_ms {
        sim.set_fault_always(Route::Any, Some(Fault::Slow(Duration::from_millis(ms))));
    }
    sim.set_throttle(args.throttle);

    println!("entra-sim listening on {}", sim.url());
    // Best effort: the line is for humans and scripts waiting on it.
    let _ = std::io::stdout().flush();
    std::future::pending::<ExitCode>().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Command, String> {
        parse_args(args.iter().map(|s| (*s).to_owned()))
    }

    #[test]
    fn parses_full_command_line() {
        let Ok(Command::Run(args)) = parse(&[
            "--listen",
            "127.0.0.1:9000",
            "--client-id=abc",
            "--client-secret",
            "xyz",
            "--job",
            "sp1/job1",
            "--job",
            "sp1/job2=Quarantine",
            "--accept-all",
            "--saved-token=tok",
        ]) else {
            panic!("should parse");
        };
        assert_eq!(args.listen, SocketAddr::from(([127, 0, 0, 1], 9000)));
        assert_eq!(args.config.client_id, "abc");
        assert_eq!(args.config.client_secret, "xyz");
        assert!(args.accept_all);
        assert_eq!(args.saved_token.as_deref(), Some("tok"));
        assert_eq!(args.jobs.len(), 2);
        assert_eq!(args.jobs[0].code, "Active");
        assert_eq!(args.jobs[1].code, "Quarantine");
    }

    #[test]
    fn parses_load_test_switches() {
        let Ok(Command::Run(args)) = parse(&[
            "--latency-ms",
            "50",
            "--throttle-every=500",
            "--throttle-burst",
            "4",
            "--throttle-retry-after",
            "2",
        ]) else {
            panic!("should parse");
        };
        assert_eq!(args.latency_ms, Some(50));
        assert_eq!(args.throttle, Some(Throttle { every: 500, burst: 4, retry_after: Some(2) }));
        let Ok(Command::Run(args)) = parse(&["--throttle-every", "10", "--throttle-retry-after", "0"]) else {
            panic!("should parse");
        };
        assert_eq!(args.throttle, Some(Throttle { every: 10, burst: 1, retry_after: None }));
        assert!(parse(&["--throttle-every", "4", "--throttle-burst", "4"]).is_err());
        assert!(parse(&["--throttle-every", "4", "--throttle-burst", "0"]).is_err());
        assert!(parse(&["--latency-ms", "fast"]).is_err());
        assert!(parse(&["--throttle-burst", "2"]).is_err());
        let Ok(Command::Run(args)) = parse(&[]) else { panic!("should parse") };
        assert_eq!((args.latency_ms, args.throttle), (None, None));
    }

    #[test]
    fn rejects_bad_arguments() {
        assert!(parse(&["--listen"]).is_err());
        assert!(parse(&["--listen", "nope"]).is_err());
        assert!(parse(&["--job", "nojob"]).is_err());
        assert!(parse(&["--job", "sp/"]).is_err());
        assert!(parse(&["--frobnicate"]).is_err());
        assert!(parse(&["--accept-all=yes"]).is_err());
        assert_eq!(parse(&["--help"]), Ok(Command::Help));
    }
}
