use super::*;

fn golden_files(suffix: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/config");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no {suffix} files in {}", dir.display());
    files
}

#[test]
fn good_files_load() {
    let mut files = golden_files(".good.yml");
    files.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/arrowhead.yml"));
    for file in files {
        Config::load(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    }
}

#[test]
fn bad_files_fail_with_file_line_and_key() {
    let mut failures = Vec::new();
    for file in golden_files(".bad.yml") {
        let text = std::fs::read_to_string(&file).unwrap();
        let expected = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{}: first line must be '# expect: ...'", file.display()));
        let err = Config::load(&file)
            .expect_err(&file.display().to_string())
            .to_string();
        if !err.starts_with(&file.display().to_string()) || !err.contains(expected) {
            failures.push(format!(
                "{}:\n  got:  {err}\n  want: {expected}",
                file.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_example_config_means_what_its_comments_say() {
    let c =
        Config::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/arrowhead.yml")).unwrap();
    let jobs = c.scrape_jobs().unwrap();
    assert_eq!(jobs[0].interval, std::time::Duration::from_secs(15));
    assert_eq!(jobs[1].interval, std::time::Duration::from_secs(5));
    assert_eq!(jobs[1].timeout, std::time::Duration::from_secs(4));
    assert_eq!(
        jobs[1].targets[0].url.as_str(),
        "http://127.0.0.1:9100/metrics?collect%5B%5D=cpu&collect%5B%5D=meminfo&collect%5B%5D=loadavg&collect%5B%5D=filesystem"
    );
    assert_eq!(jobs[1].targets[0].labels.get("env"), Some("demo"));
    assert_eq!(c.replica_label.as_deref(), Some("replica"));
    assert_eq!(c.server, ServerConfig::default());
    assert_eq!(c.query, QueryConfig::default());
    assert_eq!(c.storage, StorageConfig::default());
}

#[test]
fn the_embedded_default_scrapes_itself_every_5s() {
    let mut c = Config::embedded();
    assert!(c.scrapes_self_placeholder());
    c.set_self_target("127.0.0.1:4242");
    c.validate("<embedded>").unwrap();
    let jobs = c.scrape_jobs().unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].name, "arrowhead");
    assert_eq!(jobs[0].interval, std::time::Duration::from_secs(5));
    assert_eq!(
        jobs[0].targets[0].url.as_str(),
        "http://127.0.0.1:4242/metrics"
    );
}

#[test]
fn flags_override_the_file() {
    let mut c = Config::parse(
        "server: {http_listen: '0.0.0.0:1'}\nstorage: {path: /x}",
        "t",
    )
    .unwrap();
    c.apply(&Overrides {
        data_dir: Some("/y".into()),
        http_listen: None,
        flight_listen: Some("127.0.0.1:2".into()),
    });
    assert_eq!(c.storage.path, PathBuf::from("/y"));
    assert_eq!(c.server.http_listen, "0.0.0.0:1");
    assert_eq!(c.server.flight_listen, "127.0.0.1:2");
}
