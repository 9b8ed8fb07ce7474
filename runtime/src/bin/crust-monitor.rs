//! `crust-monitor`: one per pod; see `crust_runtime::monitor`.

fn main() -> std::process::ExitCode {
    crust_runtime::monitor::daemon::main()
}
