//! The `tollgate` binary: parses the command line, loads the configuration, runs the command
//! (`cli/`, one module per command group).

mod cli;

use anyhow::Result;
use clap::{Parser, Subcommand};
use cli::keys::KeysCommand;
use cli::plugins::PluginsCommand;
use cli::report::{LedgerCommand, LogsArgs, ReportCommand, TimeRange};
use cli::tasks::TasksCommand;
use cli::upstream::UpstreamCommand;
use cli::users::UsersCommand;
use std::path::PathBuf;
use tollgate::config::Config;

/// mimalloc: the request path allocates many small short-lived buffers; glibc's allocator
/// showed up at ~15% of CPU under load. Version 2 (the crate's `v2` feature), not 3: under
/// a 10-minute soak, mimalloc 3 grew ~10 MiB in one arena at a random time in most runs
/// (records waiting for the call log never above ~1,100, so no backlog of ours; pages
/// abandoned and reclaimed across threads 0.57 times a request), where mimalloc 2 stayed
/// flat, at the same CPU per request in the benchmark (README, Performance).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's options, by their numbers in `mi_option_e` (the same in versions 2 and 3),
/// set before mimalloc reserves its first arena, so before `main` (whose runtime has
/// allocated by then): as a constructor, like the `MIMALLOC_*` environment variables.
/// - `arena_eager_commit` off: the memory a plugin's first compile freed is not kept
///   committed: 157 → 68 MiB resident after a cold start, the same CPU per request;
/// - `purge_delay` 10 ms (mimalloc 2's default; 3's is 1 s): freed pages go back to the
///   system soon (resident after start 89 → 52 MiB when it was 0). Not 0: then a page emptied between
///   two requests was returned and faulted back in at once, each time with a TLB shootdown
///   to the other core (`smp_call_function_many_cond`, page faults 5× in a worker's
///   profile): held gateways under wrk c=32, four rounds each, 91–96 µs of CPU per request
///   at 0, 77–82 at 10 ms, 77–78 at 1 s; resident at the peak 49 → 55 MiB.
const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
const PURGE_DELAY_MS: std::os::raw::c_long = 10;

#[used]
#[link_section = ".init_array"]
static SET_ALLOCATOR_OPTIONS: extern "C" fn() = {
    extern "C" fn set() {
        // SAFETY: sets documented mimalloc options; touches nothing else.
        unsafe {
            libmimalloc_sys::mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0);
            libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS);
        }
    }
    set
};

#[derive(Parser)]
#[command(name = "tollgate", version, about = "A multi-vendor AI API gateway with WebAssembly vendor adapters")]
struct Cli {
    /// Configuration file (default: config/tollgate.toml in the current folder; also
    /// TOLLGATE_CONFIG).
    #[arg(long, global = true, env = "TOLLGATE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve,
    /// Consumer API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Upstream keys stored in the database, encrypted with TOLLGATE_MASTER_KEY.
    Upstream {
        #[command(subcommand)]
        command: UpstreamCommand,
    },
    /// Users: who owns keys and the balance.
    Users {
        #[command(subcommand)]
        command: UsersCommand,
    },
    /// Usage, spending and statistics (JSON).
    Report {
        #[command(subcommand)]
        command: ReportCommand,
        #[command(flatten)]
        range: TimeRange,
    },
    /// The request log, newest first (JSON), with the units and charge of each call.
    Logs(LogsArgs),
    /// The money ledger.
    Ledger {
        #[command(subcommand)]
        command: LedgerCommand,
    },
    /// Plugins in plugins_dir.
    Plugins {
        #[command(subcommand)]
        command: PluginsCommand,
    },
    /// Asynchronous tasks (video, music) of every user.
    Tasks {
        #[command(subcommand)]
        command: TasksCommand,
    },
    /// Compiles the plugin on standard input for `serve` (which runs it as a child process).
    #[command(hide = true)]
    CompilePlugin {
        #[arg(long)]
        memory_limit_bytes: usize,
        #[arg(long)]
        slots: u32,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Command::CompilePlugin { memory_limit_bytes, slots } = cli.command {
        // The parent reads standard error as the reason: one line, the whole chain.
        if let Err(e) = tollgate_engine::plugin::compile_plugin_main(memory_limit_bytes, slots) {
            eprintln!("{e:#}");
            std::process::exit(1);
        }
        return Ok(());
    }
    let path_given = cli.config.is_some();
    let path = cli.config.unwrap_or_else(|| PathBuf::from("config/tollgate.toml"));
    let config = Config::load(&path, path_given)?;
    tollgate::logging::init_logging(&config.log_format);
    // Requests run on `serve`'s own workers (`worker_threads` of them); this runtime accepts
    // connections and runs the background jobs and the commands.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async move {
        match cli.command {
            Command::Serve => tollgate::serve(config).await,
            Command::Keys { command } => cli::keys::run(&config, command).await,
            Command::Users { command } => cli::users::run(&config, command).await,
            Command::Upstream { command } => cli::upstream::run(&config, command).await,
            Command::Report { command, range } => cli::report::report(&config, command, range).await,
            Command::Logs(args) => cli::report::logs(&config, args).await,
            Command::Ledger { command } => cli::report::ledger(&config, command).await,
            Command::Plugins { command } => cli::plugins::run(&config, command).await,
            Command::Tasks { command } => cli::tasks::run(&config, command).await,
            Command::CompilePlugin { .. } => unreachable!("handled before the configuration is read"),
        }
    })
}
