//! The `clipdex` binary: parses the command line and hands each command to its file under
//! [`cli`], which calls the library and prints the result. Errors end here, as one line on
//! stderr.

mod cli;

use std::process::ExitCode;

use cli::{
    Cli, Command, bench, captions, config, duplicates, embed, faces, finetune, install, maintenance, models, ocr,
    regions, session, tags,
};

fn main() -> ExitCode {
    // Colours only on a terminal: a log written to a file must not fill with escape codes.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let Cli { global: g, command } = cli::parse();
    let outcome = match command {
        // Prints the unit; opens no library.
        Command::Serve(args) if args.print_systemd_unit => install::print_systemd_unit(&g, &args),
        // Commands on the library: opened here, or run by the server that holds it.
        command @ (Command::Add(_)
        | Command::Index(_)
        | Command::Watch(_)
        | Command::Serve(_)
        | Command::Roots(_)
        | Command::Remove(_)
        | Command::Worker(_)
        | Command::Search(_)
        | Command::Similar(_)
        | Command::CropSearch(_)
        | Command::Show(_)
        | Command::Places(_)
        | Command::Tags(_)
        | Command::People(_)
        | Command::Autotag(_)
        | Command::Stats(_)
        | Command::Config(_)
        | Command::Failures(_)) => session::run(&g, command),
        // Finetune's --model is its base, reindex's the model to move to, and migrate copies
        // the settings: none of them takes the library's settings.
        Command::Duplicates(args) => duplicates::duplicates(&g, args),
        Command::Finetune(args) => finetune::run(&g, &args),
        Command::Models(args) => models::run(&args),
        Command::Completions(args) => install::completions(&args),
        Command::Man(args) => install::man(&args),
        Command::Reindex(args) => maintenance::reindex(&g, &args),
        Command::Migrate(args) => maintenance::migrate(&g, &args),
        command => match config::settle_from_db(&g, true) {
            Ok(g) => run_with_settings(&g, command),
            Err(e) => Err(e),
        },
    };
    match outcome {
        Ok(code) => code,
        // The reader went away (`clipdex failures | head -1`): not an error of ours.
        Err(e) if session::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if let Some(hint) = g.database().ok().and_then(|db| cli::forward::held_by(&db, &e)) {
                eprintln!("{hint}");
            }
            ExitCode::FAILURE
        }
    }
}

/// The commands that open their models (and the library, if they use it) themselves, with the
/// library's settings applied to `g`.
fn run_with_settings(g: &cli::GlobalOptions, command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Tag(args) => tags::tag(g, &args),
        Command::Describe(args) => tags::describe(g, &args),
        Command::Eval { what } => tags::eval(g, &what),
        Command::Caption(args) => captions::caption(g, &args),
        Command::Ask(args) => captions::ask(g, &args),
        Command::Match(args) => captions::match_texts(g, &args),
        Command::Segment(args) => regions::segment(g, &args),
        Command::Ocr(args) => ocr::run(g, &args),
        Command::Faces(args) => faces::run(g, &args),
        Command::Embed(args) => embed::embed(g, &args),
        Command::Bench(args) => bench::run(g, &args),
        _ => anyhow::bail!("this command runs on an open library"),
    }
}
