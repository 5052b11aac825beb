//! The `cohort-engine` command: a thin front end over the library (`CLI.md`).

mod cli;

fn main() {
    std::process::exit(cli::run(std::env::args_os()));
}
