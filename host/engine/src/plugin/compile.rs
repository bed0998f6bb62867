//! Compiling plugins: in this process, or in a child process running this program
//! (`compile-plugin`), whose memory and crashes stay its own. Both use the engine settings of
//! `runtime::engine_config`, so code one compiles is code the other's engine accepts.

use super::runtime::engine_config;
use anyhow::{Context, Result};
use std::path::Path;
use wasmtime::component::Component;
use wasmtime::Engine;

/// Compiles a component and serializes the code.
pub(super) fn compile(engine: &Engine, wasm: &[u8]) -> Result<Vec<u8>> {
    let component =
        Component::new(engine, wasm).map_err(anyhow::Error::from).context("not a valid WebAssembly component")?;
    component.serialize().map_err(anyhow::Error::from).context("serializing the compiled plugin")
}

/// The most compiled code a child may hand back.
const MAX_CODE: u64 = 1 << 30;

/// Runs `program compile-plugin --memory-limit-bytes M --slots S` with the component on its
/// standard input; its standard output is the compiled code, its standard error the reason
/// it failed.
pub(super) fn compile_in_child(program: &Path, memory_limit: usize, slots: u32, wasm: &[u8]) -> Result<Vec<u8>> {
    use std::io::{Read, Write};
    use std::process::{Command, Stdio};
    let mut child = Command::new(program)
        .args(["compile-plugin", "--memory-limit-bytes", &memory_limit.to_string(), "--slots", &slots.to_string()])
        .env_remove("TOLLGATE_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting the plugin compiler {}", program.display()))?;
    let (mut stdin, stdout, stderr) =
        (child.stdin.take().expect("piped"), child.stdout.take().expect("piped"), child.stderr.take().expect("piped"));
    let (code, message) = std::thread::scope(|s| {
        s.spawn(move || {
            // A child that exits early closes its end: its status and message tell why.
            let _ = stdin.write_all(wasm);
        });
        let message = s.spawn(move || {
            let mut text = String::new();
            let _ = stderr.take(64 << 10).read_to_string(&mut text);
            text
        });
        let mut code = Vec::new();
        let read = stdout.take(MAX_CODE).read_to_end(&mut code);
        (read.map(|_| code), message.join().unwrap_or_default())
    });
    let status = child.wait().context("waiting for the plugin compiler")?;
    if !status.success() {
        let message = message.trim();
        anyhow::bail!(
            "{}",
            if message.is_empty() { format!("the plugin compiler failed ({status})") } else { message.to_string() }
        );
    }
    code.context("reading the compiled plugin")
}

/// The `compile-plugin` subcommand of the program given to `Runtime::compile_in_child`: reads
/// a component from standard input and writes its compiled code to standard output, for an
/// engine with the gateway's settings.
pub fn compile_plugin_main(memory_limit: usize, slots: u32) -> Result<()> {
    use std::io::{Read, Write};
    let engine = Engine::new(&engine_config(memory_limit, slots)).map_err(anyhow::Error::from)?;
    let mut wasm = Vec::new();
    std::io::stdin().read_to_end(&mut wasm).context("reading the component")?;
    let code = compile(&engine, &wasm)?;
    let mut out = std::io::stdout().lock();
    out.write_all(&code).and_then(|()| out.flush()).context("writing the compiled code")
}
