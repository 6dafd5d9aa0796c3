use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use vardr::{
    agent::{self, control, status},
    backend::BackendChoice,
    compile::Limits,
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
    /// Show the running agent's mode, backends, policy and last reload.
    Status {
        #[arg(long)]
        json: bool,
        #[arg(long, default_value = status::DEFAULT_RUNTIME_DIR)]
        runtime_dir: PathBuf,
    },
}

#[derive(clap::Args)]
struct AgentArgs {
    /// Policy file (vardr.dev/v1 Policy YAML).
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
    /// Most entries per rule map (paths, binary identities, IPv4 and IPv6
    /// networks); a policy that needs more is rejected.
    #[arg(long, default_value_t = 131072)]
    max_rules: usize,
    /// Where the agent keeps its status file and apply requests.
    #[arg(long, default_value = status::DEFAULT_RUNTIME_DIR)]
    runtime_dir: PathBuf,
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Check policy files; prints file:line:column errors.
    Validate {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Validate a policy and make the running agent load it, atomically.
    /// A rejected policy leaves the running one in force.
    Apply {
        file: PathBuf,
        #[arg(long, default_value = status::DEFAULT_RUNTIME_DIR)]
        runtime_dir: PathBuf,
        /// How long to wait for the agent's answer, in seconds.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("VARDR_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
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
                limits,
                runtime_dir: a.runtime_dir,
            };
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            rt.block_on(agent::run(opts, std::io::stdout().lock()))?;
        }
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
                match vardr::policy::load(f) {
                    Ok(p) => println!(
                        "{}: ok (policy {}, {} rules)",
                        f.display(),
                        p.name,
                        p.rules.len()
                    ),
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
        Command::Status { json, runtime_dir } => {
            let s = control::running(&runtime_dir)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
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
            }
        }
    }
    Ok(())
}
