use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use vardr::{
    agent::{self, control, status},
    backend::BackendChoice,
    compile::Limits,
    sinks::Output,
};

/// vardr: eBPF runtime security. Stops forbidden file opens, executions and
/// network connections in the kernel, and reports every decision as JSON.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent (root): load the policy into the kernel and print one
    /// JSON event per line on stdout. SIGHUP reloads the policy; SIGINT or
    /// SIGTERM stops the agent and detaches everything it attached.
    Agent(AgentArgs),
    /// Report what this kernel supports (BTF, BPF LSM, program types,
    /// helpers, mounts) and which enforcement backend each hook gets, and why.
    Probe {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Check policy files, or hand one to the running agent.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Stream events from the running agent (its gRPC API), filtered.
    Events(EventsArgs),
    /// Add, delete, list, enable or disable Tetragon TracingPolicies in the
    /// running agent, as `tetra tracingpolicy` does (over Tetragon's gRPC
    /// API). A policy added here is in force when the command returns and
    /// survives agent restarts (not reboots: list its file in the policy's
    /// spec.tracing_policies for that). With --enforce, the agent refuses
    /// changes asked for by a process its policy governs.
    #[command(subcommand, name = "tracingpolicy", visible_alias = "tp")]
    TracingPolicy(TracingPolicyCommand),
    /// Show the running agent's mode, backends, policy and last reload,
    /// and what is pinned in the kernel (also when no agent runs).
    Status {
        #[arg(long)]
        json: bool,
        #[arg(long, default_value = status::DEFAULT_RUNTIME_DIR)]
        runtime_dir: PathBuf,
        /// bpffs directory of pinned sets (see `vardr agent --keep-enforcing`).
        #[arg(long, default_value = vardr::pin::DEFAULT_PIN_DIR)]
        pin_dir: PathBuf,
    },
    /// Remove everything vardr pinned in --pin-dir: programs detach, rules
    /// are lifted. Refuses while the agent that pinned a set runs, unless
    /// --force (that agent then keeps enforcing until it exits, and leaves
    /// nothing behind).
    Unpin {
        #[arg(long, default_value = vardr::pin::DEFAULT_PIN_DIR)]
        pin_dir: PathBuf,
        #[arg(long)]
        force: bool,
    },
    /// Write man pages or shell completions generated from this command
    /// line definition (used to build the Debian package).
    #[command(subcommand, hide = true)]
    Generate(GenerateCommand),
}

#[derive(Subcommand)]
enum TracingPolicyCommand {
    /// Validate a TracingPolicy file and put it in force.
    Add {
        file: PathBuf,
        #[command(flatten)]
        at: TetragonSocket,
    },
    /// Remove a TracingPolicy added with `add`.
    Delete {
        name: String,
        #[command(flatten)]
        at: TetragonSocket,
    },
    /// List TracingPolicies: those of the policy file and those added.
    List {
        /// Print JSON (Tetragon's ListTracingPoliciesResponse mapping).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        at: TetragonSocket,
    },
    /// Put a disabled TracingPolicy back in force.
    Enable {
        name: String,
        #[command(flatten)]
        at: TetragonSocket,
    },
    /// Lift a TracingPolicy's rules, keeping it listed.
    Disable {
        name: String,
        #[command(flatten)]
        at: TetragonSocket,
    },
}

#[derive(clap::Args)]
struct TetragonSocket {
    /// The agent's Tetragon API socket (its --tetragon-socket); default:
    /// tetragon.sock in --runtime-dir.
    #[arg(long)]
    socket: Option<PathBuf>,
    #[arg(long, default_value = status::DEFAULT_RUNTIME_DIR)]
    runtime_dir: PathBuf,
}

impl TetragonSocket {
    fn path(&self) -> PathBuf {
        self.socket
            .clone()
            .unwrap_or_else(|| self.runtime_dir.join(vardr::api::tetragon::SOCKET_NAME))
    }
}

fn tracing_policy(c: TracingPolicyCommand) -> anyhow::Result<()> {
    use vardr::api::tetragon::client;
    let rt = runtime()?;
    match c {
        TracingPolicyCommand::Add { file, at } => {
            let yaml = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            // Checked here first, so errors name the file and its lines.
            let p = vardr::policy::tracing::parse(&yaml, &file)?;
            rt.block_on(client::add(&at.path(), yaml))?;
            println!(
                "TracingPolicy {} added ({} rules), in force",
                p.name,
                p.rules.len()
            );
        }
        TracingPolicyCommand::Delete { name, at } => {
            rt.block_on(client::delete(&at.path(), name.clone()))?;
            println!("TracingPolicy {name} deleted");
        }
        TracingPolicyCommand::Enable { name, at } => {
            rt.block_on(client::set_enabled(&at.path(), name.clone(), true))?;
            println!("TracingPolicy {name} enabled");
        }
        TracingPolicyCommand::Disable { name, at } => {
            rt.block_on(client::set_enabled(&at.path(), name.clone(), false))?;
            println!("TracingPolicy {name} disabled");
        }
        TracingPolicyCommand::List { json, at } => {
            let list = rt.block_on(client::list(&at.path()))?;
            if json {
                let resp = vardr::api::tetragon::pb::ListTracingPoliciesResponse { policies: list };
                println!("{}", serde_json::to_string_pretty(&resp)?);
            } else {
                println!(
                    "{:<4} {:<32} {:<9} {:<24} INFO",
                    "ID", "NAME", "STATE", "SENSORS"
                );
                for p in list {
                    let state = vardr::api::tetragon::pb::TracingPolicyState::try_from(p.state)
                        .map_or("unknown", |s| {
                            s.as_str_name().trim_start_matches("TP_STATE_")
                        });
                    println!(
                        "{:<4} {:<32} {:<9} {:<24} {}",
                        p.id,
                        p.name,
                        state.to_lowercase(),
                        p.sensors.join(","),
                        p.info
                    );
                }
            }
        }
    }
    Ok(())
}

#[derive(Subcommand)]
enum GenerateCommand {
    /// One man page per command into DIR: vardr.1, vardr-agent.1, ...
    Man { dir: PathBuf },
    /// Completions into DIR: vardr (bash), _vardr (zsh), vardr.fish.
    Completions { dir: PathBuf },
}

#[derive(clap::Args)]
struct AgentArgs {
    /// Policy file (vardr.dev/v1 Policy YAML; its `spec.cedar` names the
    /// Layer 2 Cedar files, reloaded with it).
    #[arg(long, default_value = "/etc/vardr/policy.yaml")]
    policy: PathBuf,
    /// Deny in the kernel. Without it (the default) every match is reported
    /// with verdict "audit" and nothing is blocked.
    #[arg(long)]
    enforce: bool,
    /// Enforcement backend: auto picks the strongest the kernel supports
    /// for each hook (see `vardr probe`); forcing one the kernel cannot run
    /// is an error.
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    backend: BackendChoice,
    /// Govern only processes inside this cgroup v2 directory (and below).
    #[arg(long)]
    scope_cgroup: Option<PathBuf>,
    /// The kubelet's pod log root: one directory per pod
    /// (`<namespace>_<pod>_<uid>`), how a TracingPolicyNamespaced finds
    /// the pods of its namespace (their cgroups are named after the uid).
    /// Watched: a new pod is governed before its containers start.
    #[arg(long, default_value = "/var/log/pods")]
    k8s_pod_logs: PathBuf,
    /// Most entries per rule map (paths, binary identities, IPv4 and IPv6
    /// networks); a policy that needs more is rejected.
    #[arg(long, default_value_t = 131072)]
    max_rules: usize,
    /// Where the agent keeps its status file, apply requests and the
    /// event API socket (`vardr.sock`).
    #[arg(long, default_value = status::DEFAULT_RUNTIME_DIR)]
    runtime_dir: PathBuf,
    /// What to print on stdout.
    #[arg(long, value_enum, default_value_t = Output::Json)]
    output: Output,
    /// Also write JSON lines to this file (mode 0600), rotated by size.
    #[arg(long)]
    export_file: Option<PathBuf>,
    /// Rotate the export file when it would exceed this size (bytes, or
    /// with a K, M or G suffix).
    #[arg(long, default_value = "100M", value_parser = parse_size)]
    export_max_size: u64,
    /// Rotated export files to keep (events.json.1 ... .N).
    #[arg(long, default_value_t = 5)]
    export_keep: usize,
    /// Serve Prometheus metrics at http://ADDR/metrics (off by default),
    /// e.g. 127.0.0.1:2112.
    #[arg(long)]
    metrics_addr: Option<std::net::SocketAddr>,
    /// Keep enforcing after the agent exits (clean stop or crash): programs,
    /// links and maps stay pinned in --pin-dir and the kernel goes on
    /// applying the policy, without events, until the next agent takes the
    /// set over or `vardr unpin` removes it. The next agent adopts the set
    /// when it is of the same build (same programs, backends and map sizes:
    /// the programs never stop, only the rules are switched); otherwise
    /// it loads its own set beside it and then removes the old one. Either
    /// way there is no gap. Without this flag, stopping the agent
    /// lifts every rule and leaves nothing pinned. Without BPF LSM, file
    /// rules between agents are the open tracepoints' (SIGKILL, absolute
    /// paths as written); while an agent runs, fanotify decides (EPERM).
    /// TracingPolicy kprobes, tracepoints and uprobes stay too (as
    /// Tetragon's --keep-sensors-on-exit), replaced by the next agent's.
    #[arg(long)]
    keep_enforcing: bool,
    /// Report the server name (SNI) of every outbound TLS connection of a
    /// governed process (a `tls_client_hello` event), and learn the names
    /// DNS answers give addresses, so connect and TLS events also carry
    /// `dns_names`. Read from the ClientHello as it leaves the socket, so
    /// it covers every TLS library (OpenSSL, rustls, Go, static binaries).
    /// Domain rules (`match: {domains: [...]}`) work without this flag.
    #[arg(long)]
    tls_capture: bool,
    /// Load fresh programs beside a pinned set even when it could be
    /// adopted (the old set is removed once the new one enforces).
    #[arg(long)]
    reload_programs: bool,
    /// bpffs directory for pinned sets (bpffs is mounted on /sys/fs/bpf if
    /// needed). A starting agent takes over the sets of its own
    /// --scope-cgroup found here, whatever its flags.
    #[arg(long, default_value = vardr::pin::DEFAULT_PIN_DIR)]
    pin_dir: PathBuf,
    /// Also serve Tetragon's gRPC API (tetragon.FineGuidanceSensors:
    /// events, health, version, TracingPolicy add/delete/list/enable/
    /// disable) on this Unix socket, root-only. Default: tetragon.sock in
    /// --runtime-dir; /var/run/tetragon/tetragon.sock is where `tetra`
    /// looks.
    #[arg(long)]
    tetragon_socket: Option<PathBuf>,
}

#[derive(clap::Args)]
struct EventsArgs {
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = EventsFormat::Json)]
    output: EventsFormat,
    /// Only events of binaries whose path is or contains this (repeatable).
    #[arg(long)]
    binary: Vec<String>,
    /// Only events of this process id (repeatable).
    #[arg(long)]
    pid: Vec<u32>,
    /// Only these event types: process_exec, process_exit, process_lsm,
    /// events_lost (repeatable).
    #[arg(long = "type")]
    types: Vec<String>,
    /// Only events with this verdict, from Layer 1 (deny, audit, alert,
    /// allow) or Layer 2 (deny, alert, allow) (repeatable).
    #[arg(long)]
    verdict: Vec<String>,
    /// Only processes whose cgroup path contains this (repeatable).
    #[arg(long)]
    cgroup: Vec<String>,
    /// Only processes in containers whose id starts with this (repeatable).
    #[arg(long)]
    container: Vec<String>,
    /// Stop after this many events.
    #[arg(long)]
    count: Option<u64>,
    #[arg(long, default_value = status::DEFAULT_RUNTIME_DIR)]
    runtime_dir: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum EventsFormat {
    Json,
    Compact,
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Check policy files: vardr YAML (with the Cedar files its
    /// `spec.cedar` and `spec.tracing_policies` name), Tetragon
    /// TracingPolicy files, or `.cedar` files (against the shipped Cedar
    /// schema). Prints file:line:column errors (for a TracingPolicy, also
    /// every field vardr does not support, and why), and which Cedar
    /// policies the kernel will enforce.
    Validate {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Validate a policy and make the running agent load it, atomically.
    /// A rejected policy leaves the running one in force. With --enforce,
    /// the agent refuses a request from a process its policy governs (ask
    /// from outside the rules, e.g. `systemctl reload vardr`).
    Apply {
        file: PathBuf,
        #[arg(long, default_value = status::DEFAULT_RUNTIME_DIR)]
        runtime_dir: PathBuf,
        /// How long to wait for the agent's answer, in seconds.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
}

fn main() -> ExitCode {
    use std::io::IsTerminal as _;
    // Colour only for a person at a terminal: journald and log files get
    // plain text. NO_COLOR (https://no-color.org) turns it off everywhere.
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("VARDR_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_ansi(colour)
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vardr: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Checks a policy YAML (with the Cedar files it names) or one Cedar file
/// against the shipped schema; says what the kernel will enforce.
fn validate_file(f: &std::path::Path) -> Result<String, vardr::policy::PolicyError> {
    let text = std::fs::read_to_string(f).map_err(|source| vardr::policy::PolicyError::Read {
        path: f.into(),
        source,
    })?;
    if vardr::policy::tracing::is_tracing_policy(&text) {
        let t = vardr::policy::tracing::parse(&text, f)?;
        return Ok(tracing_summary(&t));
    }
    let mut tracing = Vec::new();
    let (yaml, cedar, kernel) = if f.extension().is_some_and(|e| e == "cedar") {
        let set = vardr::cedar::load_files(&[f.to_path_buf()])?;
        let kernel = vardr::cedar::kernel::compile(&set);
        (None, set, kernel)
    } else {
        let p = vardr::compile::bundle::parse(f, &[])?;
        tracing = p.tracing;
        (Some((p.policy.name, p.own_rules)), p.cedar, p.kernel)
    };
    for w in &cedar.warnings {
        eprintln!("{w}");
    }
    for w in &kernel.warnings {
        eprintln!("{}: warning: {w}", f.display());
    }
    let mut parts = Vec::new();
    if let Some((name, rules)) = &yaml {
        parts.push(format!("policy {name}, {rules} rules"));
    }
    for t in &tracing {
        parts.push(tracing_summary(t));
    }
    if yaml.is_none() || !cedar.is_empty() {
        parts.push(format!("{} Cedar policies", cedar.len()));
    }
    if !kernel.kernel_enforced.is_empty() {
        parts.push(format!(
            "enforced in the kernel: {}",
            kernel.kernel_enforced.join(", ")
        ));
    }
    Ok(parts.join("; "))
}

/// Man pages for `cmd` and its visible subcommands, named like git's
/// (`vardr-policy-apply.1`), into `dir`.
fn write_man_pages(cmd: &clap::Command, name: &str, dir: &std::path::Path) -> anyhow::Result<()> {
    let page = cmd.clone().name(name.to_string());
    let mut out = Vec::new();
    clap_mangen::Man::new(page).render(&mut out)?;
    let path = dir.join(format!("{name}.1"));
    std::fs::write(&path, out).with_context(|| path.display().to_string())?;
    // Not the hidden ones, nor clap's `help` subcommands.
    for sub in cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        write_man_pages(sub, &format!("{name}-{}", sub.get_name()), dir)?;
    }
    Ok(())
}

fn generate(what: GenerateCommand) -> anyhow::Result<()> {
    use clap::CommandFactory as _;
    use clap_complete::Shell;
    let mut cmd = Cli::command();
    cmd.build();
    match what {
        GenerateCommand::Man { dir } => {
            std::fs::create_dir_all(&dir).with_context(|| dir.display().to_string())?;
            write_man_pages(&cmd, "vardr", &dir)
        }
        GenerateCommand::Completions { dir } => {
            std::fs::create_dir_all(&dir).with_context(|| dir.display().to_string())?;
            for (shell, file) in [
                (Shell::Bash, "vardr"),
                (Shell::Zsh, "_vardr"),
                (Shell::Fish, "vardr.fish"),
            ] {
                let path = dir.join(file);
                let mut f =
                    std::fs::File::create(&path).with_context(|| path.display().to_string())?;
                clap_complete::generate(shell, &mut cmd, "vardr", &mut f);
            }
            Ok(())
        }
    }
}

/// "4096", "64K", "100M", "1G" (binary multiples).
fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, 'K' | 'k')) => (&s[..i], 1u64 << 10),
        Some((i, 'M' | 'm')) => (&s[..i], 1 << 20),
        Some((i, 'G' | 'g')) => (&s[..i], 1 << 30),
        _ => (s, 1),
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 4096, 64K, 100M or 1G"))?;
    if n == 0 {
        return Err("size must be above 0".into());
    }
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn events(e: EventsArgs) -> anyhow::Result<()> {
    use std::io::Write;
    let filter = vardr::api::pb::SubscribeRequest {
        binary: e.binary,
        pid: e.pid,
        r#type: e.types,
        verdict: e.verdict,
        cgroup: e.cgroup,
        container_id: e.container,
    };
    let socket = e.runtime_dir.join(vardr::api::SOCKET_NAME);
    let mut seen = 0u64;
    let mut out = std::io::stdout().lock();
    let mut write_err = None;
    runtime()?.block_on(vardr::api::client::subscribe(&socket, filter, |ev| {
        let line = if ev.r#type == "events_lost" && ev.json.is_empty() {
            let msg = format!(
                "this subscriber missed {} events (reading too slowly)",
                ev.lost
            );
            match e.output {
                EventsFormat::Json => {
                    serde_json::json!({"subscriber_events_lost": {"count": ev.lost}}).to_string()
                }
                EventsFormat::Compact => format!("❗ {msg}"),
            }
        } else {
            match e.output {
                EventsFormat::Json => ev.json,
                EventsFormat::Compact => serde_json::from_str(&ev.json)
                    .ok()
                    .as_ref()
                    .and_then(vardr::events::compact)
                    .unwrap_or(ev.json),
            }
        };
        if let Err(err) = writeln!(out, "{line}").and_then(|_| out.flush()) {
            write_err = Some(err);
            return false;
        }
        seen += 1;
        e.count.is_none_or(|c| seen < c)
    }))?;
    match write_err {
        // A closed pipe (`| head`) is a normal way to stop.
        Some(err) if err.kind() != std::io::ErrorKind::BrokenPipe => Err(err.into()),
        _ => Ok(()),
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Agent(a) => {
            let limits = Limits {
                path_entries: a.max_rules,
                inode_entries: a.max_rules,
                net4_entries: a.max_rules,
                net6_entries: a.max_rules,
                ..Limits::default()
            };
            let opts = agent::AgentOptions {
                policy: a.policy,
                enforce: a.enforce,
                backend: a.backend,
                scope_cgroup: a.scope_cgroup,
                k8s_pod_logs: a.k8s_pod_logs,
                limits,
                runtime_dir: a.runtime_dir,
                output: a.output,
                export_file: a.export_file,
                export_max_bytes: a.export_max_size,
                export_keep: a.export_keep,
                metrics_addr: a.metrics_addr,
                tetragon_socket: a.tetragon_socket,
                keep_enforcing: a.keep_enforcing,
                tls_capture: a.tls_capture,
                reload_programs: a.reload_programs,
                pin_dir: a.pin_dir,
            };
            let stdout = Box::new(std::io::BufWriter::new(std::io::stdout()));
            runtime()?.block_on(agent::run(opts, stdout))?;
        }
        Command::Events(e) => events(e)?,
        Command::TracingPolicy(c) => tracing_policy(c)?,
        Command::Generate(what) => generate(what)?,
        Command::Probe { json } => {
            let report = vardr::probe::run();
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", vardr::probe::table(&report));
            }
        }
        Command::Policy(PolicyCommand::Validate { files }) => {
            let mut failed = false;
            for f in &files {
                match validate_file(f) {
                    Ok(summary) => println!("{}: ok ({summary})", f.display()),
                    Err(e) => {
                        eprintln!("{e}");
                        failed = true;
                    }
                }
            }
            if failed {
                anyhow::bail!("invalid policy");
            }
        }
        Command::Policy(PolicyCommand::Apply {
            file,
            runtime_dir,
            timeout,
        }) => {
            let r = control::apply(&runtime_dir, &file, Duration::from_secs(timeout))?;
            println!("{}: applied at {}", file.display(), r.at);
        }
        Command::Status {
            json,
            runtime_dir,
            pin_dir,
        } => show_status(json, &runtime_dir, &pin_dir)?,
        Command::Unpin { pin_dir, force } => unpin(&pin_dir, force)?,
    }
    Ok(())
}

/// A pinned set as `vardr status` shows it.
#[derive(serde::Serialize)]
struct PinnedView {
    set_id: String,
    /// "up" or "down".
    agent: &'static str,
    agent_pid: Option<u32>,
    /// When the agent started (up) or was last known alive (down).
    since: Option<String>,
    policy_name: Option<String>,
    policy_hash: Option<String>,
    mode: Option<String>,
    hooks: Vec<vardr::pin::HookBackend>,
    scope_cgroup: Option<PathBuf>,
    layout: Option<u32>,
    /// Seconds enforced with no agent.
    unattended_secs: Option<u64>,
    error: Option<String>,
}

fn rfc3339(ns: u64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_nanos(ns);
    humantime::format_rfc3339_seconds(t).to_string()
}

fn pinned_views(pin_dir: &std::path::Path) -> Vec<PinnedView> {
    let pins = vardr::pin::PinDir::new(pin_dir);
    if !pins.exists() {
        return Vec::new();
    }
    pins.sets()
        .into_iter()
        .map(|s| {
            let up = s.owner_running();
            let m = s.meta.as_ref().ok();
            let since = m.map(|m| {
                if up {
                    m.started_at
                } else {
                    s.alive_at.or(m.stopped_at).unwrap_or(m.started_at)
                }
            });
            PinnedView {
                set_id: s.id.clone(),
                agent: if up { "up" } else { "down" },
                agent_pid: m.map(|m| m.agent_pid),
                since: since.map(rfc3339),
                policy_name: m.map(|m| m.policy_name.clone()),
                policy_hash: m.map(|m| m.policy_hash.clone()),
                mode: m.map(|m| m.mode.clone()),
                hooks: m.map(|m| m.hooks.clone()).unwrap_or_default(),
                scope_cgroup: m.and_then(|m| m.scope_cgroup.clone()),
                layout: m.map(|m| m.layout),
                unattended_secs: s.unattended().map(|d| d.as_secs()),
                error: s.meta.as_ref().err().cloned(),
            }
        })
        .collect()
}

fn show_status(
    json: bool,
    runtime_dir: &std::path::Path,
    pin_dir: &std::path::Path,
) -> anyhow::Result<()> {
    let running = control::running(runtime_dir);
    let pinned = pinned_views(pin_dir);
    let s = match running {
        Ok(s) => Some(s),
        Err(e) if pinned.is_empty() => return Err(e.into()),
        Err(_) => None,
    };
    if json {
        let mut v = match &s {
            Some(s) => serde_json::to_value(s)?,
            None => serde_json::json!({ "running": false }),
        };
        if let Some(o) = v.as_object_mut() {
            o.insert("pinned".into(), serde_json::to_value(&pinned)?);
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    match &s {
        Some(s) => print_agent(s),
        None => println!("agent     not running ({})", runtime_dir.display()),
    }
    for p in &pinned {
        println!(
            "pinned    set {} in {}: agent {} (pid {}) since {}",
            p.set_id,
            pin_dir.display(),
            p.agent,
            p.agent_pid.map_or("?".into(), |p| p.to_string()),
            p.since.as_deref().unwrap_or("?")
        );
        if let Some(e) = &p.error {
            println!("          unreadable metadata: {e}");
            continue;
        }
        println!(
            "          policy {} (hash {}), {}{}",
            p.policy_name.as_deref().unwrap_or("?"),
            p.policy_hash.as_deref().unwrap_or("?"),
            p.mode.as_deref().unwrap_or("?"),
            p.scope_cgroup
                .as_ref()
                .map_or(String::new(), |c| format!(", scope {}", c.display()))
        );
        for h in &p.hooks {
            let e = if h.enforcing {
                "enforcing"
            } else {
                "audit only"
            };
            println!("            {:<8} {:<9} {e}", h.hook, h.backend);
        }
        if let Some(u) = p.unattended_secs {
            println!("          enforcing with no agent for {u} s (no events are read meanwhile)");
        }
    }
    Ok(())
}

fn print_agent(s: &status::Status) {
    println!(
        "agent     pid {} since {} on {}",
        s.pid, s.started_at, s.kernel
    );
    println!("mode      {}", s.mode);
    println!(
        "policy    {} ({} rules) from {}",
        s.policy_name,
        s.rules,
        s.policy_path.display()
    );
    if s.cedar_policies > 0 {
        let k = if s.kernel_enforced.is_empty() {
            String::new()
        } else {
            format!("; in the kernel: {}", s.kernel_enforced.join(", "))
        };
        println!("layer 2   {} Cedar policies{k}", s.cedar_policies);
    }
    if let Some(c) = &s.scope_cgroup {
        println!("scope     {}", c.display());
    }
    for h in &s.hooks {
        let e = if h.enforcing {
            "enforcing"
        } else {
            "audit only"
        };
        println!("  {:<8} {:<9} {:<11} {}", h.hook, h.backend, e, h.reason);
    }
    let r = &s.last_reload;
    match &r.error {
        None => println!("reload    ok at {}", r.at),
        Some(e) => println!("reload    REJECTED at {}: {e}", r.at),
    }
    println!("lost      {} events", s.events_lost);
    for t in &s.took_over {
        println!(
            "took over set {} (policy {}): unattended {}, {} queued events delivered late, {} lost",
            t.set_id,
            t.policy_name,
            t.unattended_secs
                .map_or("-".into(), |u| format!("{u:.1} s")),
            t.queued_events,
            t.events_lost
        );
    }
}

fn unpin(pin_dir: &std::path::Path, force: bool) -> anyhow::Result<()> {
    let pins = vardr::pin::PinDir::new(pin_dir);
    if !pins.exists() {
        println!("nothing pinned in {}", pin_dir.display());
        return Ok(());
    }
    let sets = pins.sets();
    if !force {
        if let Some(s) = sets.iter().find(|s| s.owner_running()) {
            let pid = s.meta.as_ref().map(|m| m.agent_pid).unwrap_or(0);
            anyhow::bail!(
                "set {} in {} belongs to a running agent (pid {pid}); stop it first, or --force",
                s.id,
                pin_dir.display()
            );
        }
    }
    let mut failed = false;
    for s in &sets {
        for e in s.remove() {
            eprintln!("{e}");
            failed = true;
        }
    }
    pins.remove_if_empty();
    if failed {
        anyhow::bail!("some pins could not be removed");
    }
    println!(
        "removed {} pinned set(s) from {}",
        sets.len(),
        pin_dir.display()
    );
    Ok(())
}

/// "TracingPolicy NAME, N rules, M hooks (kprobes 1, lsmhooks 2)": native
/// rules, and hooks run on their own by section.
fn tracing_summary(t: &vardr::policy::tracing::TracingPolicy) -> String {
    let mut s = format!("TracingPolicy {}, {} rules", t.name, t.rules.len());
    if !t.hooks.is_empty() {
        let mut by: Vec<(&str, usize)> = Vec::new();
        for h in &t.hooks {
            let section = h.point.section();
            match by.iter_mut().find(|(s, _)| *s == section) {
                Some((_, n)) => *n += 1,
                None => by.push((section, 1)),
            }
        }
        let by: Vec<String> = by.iter().map(|(s, n)| format!("{s} {n}")).collect();
        s.push_str(&format!(", {} hooks ({})", t.hooks.len(), by.join(", ")));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(65536));
        assert_eq!(parse_size("100M"), Ok(100 << 20));
        assert!(parse_size("0").is_err());
        assert!(parse_size("ten").is_err());
    }
}
