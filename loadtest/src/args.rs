//! The command line, parsed by hand: a few flags do not justify clap's
//! compile time on a two-core build machine.
//!
//! Flags take their value as the next argument or after `=`
//! (`--duration 10s`, `--duration=10s`); `--header` repeats.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Printed by `help` and after an argument error.
pub const USAGE: &str = "\
usage:
  qyzar-loadtest run      --url URL [request] [load] [--json FILE]
  qyzar-loadtest compare  --url URL [request] [load] [--rounds 5] [--baseline-url URL]
                          [--baseline strict|engine-like|durable] [--pin-server CPUS] [--json FILE]
  qyzar-loadtest baseline [--host 127.0.0.1] [--port 0] [--kind strict|engine-like|durable]
  qyzar-loadtest engine-compare [load] [--rounds 5] [--projects 1000] [--sessions 100000]
                          [--scenarios a,b,...] [--baseline strict|engine-like|durable]
                          [--pin-server CPUS] [--json FILE]
  qyzar-loadtest engine-serve --dir DIR [--host 127.0.0.1] [--port 0] [--token-cache N]
  qyzar-loadtest abuse    [--duration 60s] [--victim-rate 200] [--victim-connections 8]
                          [--attack-connections 16] [--attack-rate 2000] [--slow-connections 64]
                          [--attack-kinds junk,idempotency,big_token,limiter_flood]
                          [--sessions 1000] [--pin-server CPUS] [--json FILE]

The baseline is the strict hello-world by default: the shared instrument's
current-thread hyper server that reads the body and answers a 14-byte JSON
(../shared/perf/hello-baseline). `engine-like` is the earlier one, with the
engine's server settings on a multi-thread runtime, kept for reference.
`durable` is the strict one whose answer also waits for the request's body
to be durable (group commit to a file under $TMPDIR, as the anti-ATO
journal does): the ceiling of a route that writes before it answers.

engine-compare starts its own engine (this binary's engine-serve, a child
process over a temporary embedded store and a generated snapshot) and the
baseline, and compares every hot route with the baseline: maximum
throughput, then p99 at half the baseline's maximum (and at half the
route's own, when it cannot reach that). With --rate N it runs only open
rounds at N/s on both: the tail at a rate of your choosing, with no
overloading rounds just before it. Scenarios:
session-verify-hit, rate-limit-3-buckets, token-mint-hs256,
token-verify-hs256-cached, token-verify-hs256-uncached,
token-verify-eddsa-cached, ato-login-attempt (50 000 identifiers),
ato-login-attempt-hot (one identifier).

abuse starts a fresh child engine twice: the victim tenant's fixed mix
alone (control), then the same mix under a hostile one (junk bodies, fresh
Idempotency-Keys on 60 KiB bodies, 8 KiB self-signed tokens, a unique-IP
rate-limit flood with a one-day settingsOverride, trickling connections).
It reports the engine's peak RSS, the victim's decisions (equal or not) and
latency percentiles of both runs. --attack-rate 0 attacks at full speed.

request:
  --url URL            http://host:port/path (the path is used unless --scenario or --mix)
  --method M           GET (default), POST, ...
  --body FILE          request body read from FILE
  --header 'K: V'      extra header, repeatable
  --scenario NAME      built-in request set instead of the URL's path: ping
  --mix FILE           weighted request mix, lines of `weight method path [body-file]`

load:
  --connections N      concurrent connections (default 32)
  --duration D         measured time, e.g. 10s, 500ms, 1m (default 10s)
  --warmup D           unmeasured time before it (default 2s)
  --rate N             open loop at N requests/s, latency from the intended send time;
                       without it, closed loop at maximum throughput
  --closed             with --rate: paced closed loop, latency corrected with the
                       expected interval (HdrHistogram's record_correct)

process:
  --pin-client CPUS    pin this process with taskset (e.g. 1 or 2-3)
  --pin-server CPUS    compare: pin the spawned baseline server with taskset
  --threads N          client runtime worker threads (default: all cores)
  --quiet              no progress line on stderr
";

/// A parsed command line.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Load one target and report.
    Run(RunArgs),
    /// Serve the hello-world baseline until interrupted.
    Baseline(BaselineArgs),
    /// Interleave the baseline and the route and report the ratio.
    Compare(CompareArgs),
    /// Every engine route against the baseline, with its own engine.
    EngineCompare(EngineCompareArgs),
    /// The engine over a generated world (started by `engine-compare`).
    EngineServe(EngineServeArgs),
    /// A victim tenant's traffic with and without a hostile mix.
    Abuse(AbuseArgs),
    /// Print the usage.
    Help,
}

impl Command {
    /// The process options every command has.
    pub fn common(&self) -> Common {
        match self {
            Command::Run(a) => a.common.clone(),
            Command::Baseline(a) => a.common.clone(),
            Command::Compare(a) => a.common.clone(),
            Command::EngineCompare(a) => a.common.clone(),
            Command::EngineServe(a) => a.common.clone(),
            Command::Abuse(a) => a.common.clone(),
            Command::Help => Common::default(),
        }
    }
}

/// Process options shared by all commands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Common {
    /// CPU list for `taskset` to pin this process to.
    pub pin_client: Option<String>,
    /// Tokio worker threads; `None` is one per core.
    pub threads: Option<usize>,
    /// Suppresses the per-second progress line.
    pub quiet: bool,
}

/// What to send.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestArgs {
    /// Target URL; its path is the request unless a scenario or mix is given.
    pub url: String,
    /// Method for the URL's request.
    pub method: Option<String>,
    /// File holding the body for the URL's request.
    pub body: Option<PathBuf>,
    /// Extra headers for every request, in order.
    pub headers: Vec<(String, String)>,
    /// A built-in scenario name.
    pub scenario: Option<String>,
    /// A mix file.
    pub mix: Option<PathBuf>,
}

/// How hard and how long.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadArgs {
    /// Concurrent connections.
    pub connections: usize,
    /// Measured time.
    pub duration: Duration,
    /// Unmeasured time before it, to fill caches, pools and TCP windows.
    pub warmup: Duration,
    /// Requests per second for a paced run; `None` is as fast as possible.
    pub rate: Option<f64>,
    /// With a rate: closed loop with correction instead of open loop.
    pub closed: bool,
}

impl Default for LoadArgs {
    fn default() -> Self {
        Self {
            connections: 32,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(2),
            rate: None,
            closed: false,
        }
    }
}

/// `run`.
#[derive(Debug, Clone, PartialEq)]
pub struct RunArgs {
    /// What to send.
    pub request: RequestArgs,
    /// How hard.
    pub load: LoadArgs,
    /// Where to write the JSON report.
    pub json: Option<PathBuf>,
    /// Process options.
    pub common: Common,
}

/// `baseline`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaselineArgs {
    /// Which hello-world.
    pub kind: crate::baseline::Kind,
    /// Address to bind.
    pub host: String,
    /// Port to bind; 0 picks a free one (printed on stdout).
    pub port: u16,
    /// Process options.
    pub common: Common,
}

/// `compare`.
#[derive(Debug, Clone, PartialEq)]
pub struct CompareArgs {
    /// What to send to the route (and, re-targeted, to the baseline).
    pub request: RequestArgs,
    /// Connections, duration and warm-up of every round; a rate is refused
    /// because compare picks its own (half the baseline's maximum).
    pub load: LoadArgs,
    /// Rounds of each side, at least 1; 5 or more for a stable median.
    pub rounds: usize,
    /// An already running baseline; `None` spawns one.
    pub baseline_url: Option<String>,
    /// Which hello-world to spawn.
    pub baseline: crate::baseline::Kind,
    /// CPU list for the spawned baseline.
    pub pin_server: Option<String>,
    /// Where to write the JSON report.
    pub json: Option<PathBuf>,
    /// Process options.
    pub common: Common,
}

/// `engine-compare`.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineCompareArgs {
    /// Connections, duration and warm-up of every round.
    pub load: LoadArgs,
    /// Rounds of each side per scenario, at least 1.
    pub rounds: usize,
    /// Projects in the generated snapshot.
    pub projects: usize,
    /// Sessions seeded into the engine.
    pub sessions: usize,
    /// Comma-separated scenario names (`instrument` for the shared
    /// instrument's six); `None` runs the engine's own set.
    pub scenarios: Option<String>,
    /// Which hello-world to spawn.
    pub baseline: crate::baseline::Kind,
    /// CPU list for the spawned engine and baseline.
    pub pin_server: Option<String>,
    /// Where to write the JSON report.
    pub json: Option<PathBuf>,
    /// Process options.
    pub common: Common,
}

/// `engine-serve`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineServeArgs {
    /// The directory holding `snapshot.bin` and `sessions.tsv`; the embedded
    /// store is created there.
    pub dir: String,
    /// Address to bind.
    pub host: String,
    /// Port to bind; 0 picks a free one (printed on stdout).
    pub port: u16,
    /// The verified-token cache, in KiB, for one project; `None` keeps the
    /// engine's default budgets (what `abuse` measures against).
    pub token_cache: Option<u64>,
    /// Process options.
    pub common: Common,
}

/// `abuse`.
#[derive(Debug, Clone, PartialEq)]
pub struct AbuseArgs {
    /// Planned length of each phase: the victim's requests are
    /// `victim_rate × duration`, sent on that schedule.
    pub duration: Duration,
    /// The victim's requests per second.
    pub victim_rate: f64,
    /// The victim's connections.
    pub victim_connections: usize,
    /// Connections sending the hostile request kinds.
    pub attack_connections: usize,
    /// Hostile requests per second, all attack connections together; 0 is
    /// as fast as the engine answers.
    pub attack_rate: f64,
    /// Connections that trickle headers or bodies.
    pub slow_connections: usize,
    /// The hostile request kinds the attack connections take in turn (a
    /// subset of the built-in ones, to find which kind costs what).
    pub attack_kinds: Vec<String>,
    /// The victim's seeded sessions.
    pub sessions: usize,
    /// CPU list for the spawned engines.
    pub pin_server: Option<String>,
    /// Where to write the JSON report.
    pub json: Option<PathBuf>,
    /// Process options.
    pub common: Common,
}

/// A command line that cannot be run; the message names the culprit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgError(pub String);

impl fmt::Display for ArgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ArgError {}

fn err<T>(msg: impl Into<String>) -> Result<T, ArgError> {
    Err(ArgError(msg.into()))
}

/// The lowest `--rate` taken.
const MIN_RATE: f64 = 0.001;

/// Parses the arguments after the program name.
pub fn parse(argv: &[String]) -> Result<Command, ArgError> {
    let Some((cmd, rest)) = argv.split_first() else {
        return Ok(Command::Help);
    };
    if matches!(cmd.as_str(), "help" | "-h" | "--help")
        || rest.iter().any(|a| a == "--help" || a == "-h")
    {
        return Ok(Command::Help);
    }
    let mut flags = Flags::split(cmd, rest)?;
    let command = match cmd.as_str() {
        "run" => Command::Run(RunArgs {
            request: request_args(&mut flags)?,
            load: load_args(&mut flags)?,
            json: flags.take("json").map(PathBuf::from),
            common: common(&mut flags)?,
        }),
        "baseline" => Command::Baseline(BaselineArgs {
            kind: baseline_kind(&mut flags, "kind")?,
            host: flags.take("host").unwrap_or_else(|| "127.0.0.1".into()),
            port: flags.parsed("port")?.unwrap_or(0),
            common: common(&mut flags)?,
        }),
        "compare" => {
            let load = load_args(&mut flags)?;
            if load.rate.is_some() || load.closed {
                return err("compare picks its own rate (half the baseline's maximum); drop --rate/--closed");
            }
            let rounds = flags.parsed("rounds")?.unwrap_or(5);
            if rounds == 0 {
                return err("--rounds must be at least 1");
            }
            let c = CompareArgs {
                request: request_args(&mut flags)?,
                load,
                rounds,
                baseline_url: flags.take("baseline-url"),
                baseline: baseline_kind(&mut flags, "baseline")?,
                pin_server: flags.take("pin-server").map(cpu_list).transpose()?,
                json: flags.take("json").map(PathBuf::from),
                common: common(&mut flags)?,
            };
            // The spawned baseline would inherit the generator's pinning and
            // share its cores: an unfair comparison nobody asked for.
            if c.common.pin_client.is_some() && c.pin_server.is_none() && c.baseline_url.is_none() {
                return err("with --pin-client, give --pin-server too (the spawned baseline would share the client's CPUs)");
            }
            Command::Compare(c)
        }
        "engine-compare" => {
            let load = load_args(&mut flags)?;
            if load.closed {
                return err("engine-compare's paced runs are open loop; drop --closed");
            }
            let c = EngineCompareArgs {
                load,
                rounds: flags.parsed("rounds")?.unwrap_or(5),
                projects: flags.parsed("projects")?.unwrap_or(1000),
                sessions: flags.parsed("sessions")?.unwrap_or(100_000),
                scenarios: flags.take("scenarios"),
                baseline: baseline_kind(&mut flags, "baseline")?,
                pin_server: flags.take("pin-server").map(cpu_list).transpose()?,
                json: flags.take("json").map(PathBuf::from),
                common: common(&mut flags)?,
            };
            if c.rounds == 0 || c.projects == 0 || c.sessions == 0 {
                return err("--rounds, --projects and --sessions must be at least 1");
            }
            if c.common.pin_client.is_some() && c.pin_server.is_none() {
                return err("with --pin-client, give --pin-server too (the spawned servers would share the client's CPUs)");
            }
            Command::EngineCompare(c)
        }
        "engine-serve" => Command::EngineServe(EngineServeArgs {
            dir: flags
                .take("dir")
                .ok_or_else(|| ArgError("engine-serve needs --dir".into()))?,
            host: flags.take("host").unwrap_or_else(|| "127.0.0.1".into()),
            port: flags.parsed("port")?.unwrap_or(0),
            token_cache: flags.parsed("token-cache")?,
            common: common(&mut flags)?,
        }),
        "abuse" => {
            let a = AbuseArgs {
                duration: flags
                    .duration("duration")?
                    .unwrap_or(Duration::from_secs(60)),
                victim_rate: flags.parsed("victim-rate")?.unwrap_or(200.0),
                victim_connections: flags.parsed("victim-connections")?.unwrap_or(8),
                attack_connections: flags.parsed("attack-connections")?.unwrap_or(16),
                attack_rate: flags.parsed("attack-rate")?.unwrap_or(2000.0),
                slow_connections: flags.parsed("slow-connections")?.unwrap_or(64),
                attack_kinds: match flags.take("attack-kinds") {
                    None => crate::abuse::ATTACK_KINDS
                        .iter()
                        .map(|k| k.to_string())
                        .collect(),
                    Some(list) => list.split(',').map(str::to_owned).collect(),
                },
                sessions: flags.parsed("sessions")?.unwrap_or(1000),
                pin_server: flags.take("pin-server").map(cpu_list).transpose()?,
                json: flags.take("json").map(PathBuf::from),
                common: common(&mut flags)?,
            };
            if a.duration.is_zero() {
                return err("--duration must be above zero");
            }
            if let Some(k) = a
                .attack_kinds
                .iter()
                .find(|k| !crate::abuse::ATTACK_KINDS.contains(&k.as_str()))
            {
                return err(format!(
                    "--attack-kinds: unknown kind `{k}` (known: {})",
                    crate::abuse::ATTACK_KINDS.join(",")
                ));
            }
            if !(a.victim_rate.is_finite() && a.victim_rate >= MIN_RATE) {
                return err(
                    "--victim-rate must be a number of requests per second, at least 0.001",
                );
            }
            if !(a.attack_rate == 0.0 || a.attack_rate.is_finite() && a.attack_rate >= MIN_RATE) {
                return err(
                    "--attack-rate must be 0 (full speed) or at least 0.001 requests per second",
                );
            }
            if a.victim_connections == 0 {
                return err("--victim-connections must be at least 1");
            }
            Command::Abuse(a)
        }
        other => return err(format!("unknown command `{other}`")),
    };
    Ok(command)
}

/// Parses `10s`, `250ms`, `2m`, `1.5s`; a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, ArgError> {
    let (num, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num
        .trim()
        .parse()
        .ok()
        .filter(|n: &f64| n.is_finite() && *n >= 0.0)
        .ok_or_else(|| ArgError(format!("`{s}` is not a duration (e.g. 10s, 500ms, 1m)")))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return err(format!("`{s}`: unknown unit `{unit}` (ms, s, m)")),
    };
    Ok(Duration::from_secs_f64(secs))
}

/// `Name: value`, split at the first colon, both sides trimmed.
pub fn parse_header(s: &str) -> Result<(String, String), ArgError> {
    match s.split_once(':') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.trim().to_owned())),
        _ => err(format!("`{s}` is not a header (expected `Name: value`)")),
    }
}

/// `--NAME strict|engine-like|durable`, strict when absent.
fn baseline_kind(flags: &mut Flags, name: &str) -> Result<crate::baseline::Kind, ArgError> {
    match flags.take(name) {
        None => Ok(crate::baseline::Kind::default()),
        Some(v) => v.parse().map_err(ArgError),
    }
}

fn cpu_list(s: String) -> Result<String, ArgError> {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_digit() || b == b',' || b == b'-')
    {
        Ok(s)
    } else {
        err(format!("`{s}` is not a CPU list (e.g. 0, 1-3, 0,2)"))
    }
}

fn request_args(flags: &mut Flags) -> Result<RequestArgs, ArgError> {
    let Some(url) = flags.take("url") else {
        return err("--url is required");
    };
    let request = RequestArgs {
        url,
        method: flags.take("method"),
        body: flags.take("body").map(PathBuf::from),
        headers: flags
            .take_all("header")
            .iter()
            .map(|h| parse_header(h))
            .collect::<Result<_, _>>()?,
        scenario: flags.take("scenario"),
        mix: flags.take("mix").map(PathBuf::from),
    };
    if request.scenario.is_some() && request.mix.is_some() {
        return err("--scenario and --mix are alternatives; give one");
    }
    Ok(request)
}

fn load_args(flags: &mut Flags) -> Result<LoadArgs, ArgError> {
    let d = LoadArgs::default();
    let load = LoadArgs {
        connections: flags.parsed("connections")?.unwrap_or(d.connections),
        duration: flags.duration("duration")?.unwrap_or(d.duration),
        warmup: flags.duration("warmup")?.unwrap_or(d.warmup),
        rate: flags.parsed("rate")?,
        closed: flags.switch("closed"),
    };
    if load.connections == 0 {
        return err("--connections must be at least 1");
    }
    if load.duration.is_zero() {
        return err("--duration must be above zero");
    }
    // At least one request in 1 000 s: a slot's time (`k / rate` seconds)
    // stays within what a `Duration` and an `Instant` hold.
    if load.rate.is_some_and(|r| !(r.is_finite() && r >= MIN_RATE)) {
        return err("--rate must be a number of requests per second, at least 0.001");
    }
    if load.closed && load.rate.is_none() {
        return err("--closed needs --rate (without a rate the run is closed loop already)");
    }
    Ok(load)
}

fn common(flags: &mut Flags) -> Result<Common, ArgError> {
    let threads = flags.parsed("threads")?;
    if threads == Some(0) {
        return err("--threads must be at least 1");
    }
    Ok(Common {
        pin_client: flags.take("pin-client").map(cpu_list).transpose()?,
        threads,
        quiet: flags.switch("quiet"),
    })
}

/// The flags each command takes, for clap: the ones with a value, the
/// repeatable ones and the switches. Validation and defaults stay in
/// [`parse`], which reads them back through [`Flags`].
fn spec(cmd: &str) -> Option<clap::Command> {
    const COMMON: &[&str] = &["pin-client", "threads"];
    const REQUEST: &[&str] = &["url", "method", "body", "scenario", "mix"];
    const LOAD: &[&str] = &["connections", "duration", "warmup", "rate"];
    let (valued, load, request): (&[&str], bool, bool) = match cmd {
        "run" => (&["json"], true, true),
        "baseline" => (&["kind", "host", "port"], false, false),
        "compare" => (
            &["rounds", "baseline-url", "baseline", "pin-server", "json"],
            true,
            true,
        ),
        "engine-compare" => (
            &[
                "rounds",
                "projects",
                "sessions",
                "scenarios",
                "baseline",
                "pin-server",
                "json",
            ],
            true,
            false,
        ),
        "engine-serve" => (&["dir", "host", "port", "token-cache"], false, false),
        "abuse" => (
            &[
                "duration",
                "victim-rate",
                "victim-connections",
                "attack-connections",
                "attack-rate",
                "slow-connections",
                "attack-kinds",
                "sessions",
                "pin-server",
                "json",
            ],
            false,
            false,
        ),
        _ => return None,
    };
    let value = |name: &'static str| {
        clap::Arg::new(name)
            .long(name)
            .num_args(1)
            .allow_negative_numbers(true)
    };
    let switch = |name: &'static str| {
        clap::Arg::new(name)
            .long(name)
            .action(clap::ArgAction::SetTrue)
    };
    let mut c = clap::Command::new("qyzar-loadtest")
        .no_binary_name(true)
        .disable_help_flag(true)
        .disable_version_flag(true)
        // A repeated flag overrides, as documented for every command.
        .args_override_self(true)
        .args(valued.iter().chain(COMMON).map(|n| value(n)))
        .arg(switch("quiet"));
    if load {
        c = c.args(LOAD.iter().map(|n| value(n))).arg(switch("closed"));
    }
    if request {
        c = c.args(REQUEST.iter().map(|n| value(n))).arg(
            clap::Arg::new("header")
                .long("header")
                .num_args(1)
                .action(clap::ArgAction::Append),
        );
    }
    Some(c)
}

/// One command line's flags as clap matched them, consumed as the parser
/// asks for them.
struct Flags(clap::ArgMatches);

impl Flags {
    fn split(cmd: &str, args: &[String]) -> Result<Self, ArgError> {
        let Some(spec) = spec(cmd) else {
            return err(format!("unknown command `{cmd}`"));
        };
        spec.try_get_matches_from(args).map(Flags).map_err(|e| {
            ArgError(
                e.to_string()
                    .trim()
                    .trim_start_matches("error: ")
                    .to_owned(),
            )
        })
    }

    fn take_all(&mut self, name: &str) -> Vec<String> {
        self.0
            .remove_many::<String>(name)
            .map(Iterator::collect)
            .unwrap_or_default()
    }

    /// The value given for `name` (the last, when repeated).
    fn take(&mut self, name: &str) -> Option<String> {
        self.0.remove_one::<String>(name)
    }

    fn switch(&mut self, name: &str) -> bool {
        self.0.remove_one::<bool>(name).unwrap_or(false)
    }

    fn parsed<T: std::str::FromStr>(&mut self, name: &str) -> Result<Option<T>, ArgError> {
        self.take(name)
            .map(|v| {
                v.parse()
                    .map_err(|_| ArgError(format!("--{name}: `{v}` is not a valid value")))
            })
            .transpose()
    }

    fn duration(&mut self, name: &str) -> Result<Option<Duration>, ArgError> {
        self.take(name)
            .map(|v| parse_duration(&v).map_err(|e| ArgError(format!("--{name}: {e}"))))
            .transpose()
    }
}

#[cfg(test)]
mod tests;
