//! `arrowhead check config FILE` and `arrowhead check rules FILE...`.

use std::process::ExitCode;

use crate::CheckCommand;
use crate::config::Config;

pub(crate) fn run(command: CheckCommand) -> anyhow::Result<ExitCode> {
    match command {
        CheckCommand::Config { file } => {
            let config = Config::load(&file)?;
            let jobs = config.scrape_jobs().map_err(anyhow::Error::msg)?;
            let targets: usize = jobs.iter().map(|j| j.targets.len()).sum();
            println!(
                "{}: OK ({} scrape jobs, {} targets)",
                file.display(),
                jobs.len(),
                targets
            );
            Ok(ExitCode::SUCCESS)
        }
        CheckCommand::Rules { files } => {
            for file in files {
                eprintln!(
                    "{}: rule files are not supported yet by this version of Arrowhead",
                    file.display()
                );
            }
            Ok(ExitCode::FAILURE)
        }
    }
}
