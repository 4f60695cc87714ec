use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = latchkey::cli::Cli::parse();
    match latchkey::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("latchkey: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
