//! `driftwarden exempt` and `resume` without a running Driftwarden write the
//! ledger directly; with one running (the ledger held), they leave a request.

use std::path::Path;
use std::time::Duration;

use driftwarden::cli::{Cli, Command, Output, run};
use driftwarden::config::Config;
use model::ExemptionScope;

fn config_in(dir: &Path) -> (std::path::PathBuf, Config) {
    let path = dir.join("driftwarden.yaml");
    let text = format!(
        "version: 1\ncluster: {{name: prod}}\ndata_dir: {}\nsources: [{{name: apps, url: 'file:///srv/apps'}}]\n",
        dir.join("data").display()
    );
    std::fs::write(&path, &text).expect("write config");
    let config = Config::parse(&path, &text).expect("config");
    (path, config)
}

fn exempt(config: &Path, key: Option<&str>, scope: Option<&str>) -> Cli {
    Cli {
        output: Output::Human,
        remote: Default::default(),
        command: Command::Exempt {
            config: config.to_owned(),
            key: key.map(str::to_owned),
            scope: scope.map(str::to_owned),
            duration: Duration::from_secs(7200),
            reason: "INC-42 hotfix".into(),
        },
    }
}

#[tokio::test]
async fn exemption_is_recorded_in_the_ledger_when_none_runs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (path, config) = config_in(dir.path());
    let outcome = run(exempt(&path, Some("apps/Deployment/team-a/web"), None))
        .await
        .expect("exempt");
    assert!(
        outcome.text.contains("recorded as ledger record #1"),
        "{}",
        outcome.text
    );

    let ledger = driftwarden::run::open_ledger(&config).expect("ledger");
    let exemptions = ledger.exemptions().expect("exemptions");
    assert_eq!(exemptions.len(), 1);
    let ExemptionScope::Object { key } = &exemptions[0].scope else {
        panic!("object scope expected: {:?}", exemptions[0].scope);
    };
    assert_eq!(key.to_string(), "prod/apps/Deployment/team-a/web");
    assert_eq!(exemptions[0].reason, "INC-42 hotfix");
    assert_eq!(
        exemptions[0].until - exemptions[0].from,
        chrono::Duration::hours(2)
    );
}

#[tokio::test]
async fn a_held_ledger_is_reached_through_the_socket_of_the_process_holding_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (path, config) = config_in(dir.path());
    // Held by something that does not answer on the socket (a process
    // that is starting, or stuck): the error says so, and nothing is
    // written past it.
    let held = driftwarden::run::open_ledger(&config).expect("ledger");
    let err = run(exempt(&path, None, Some("team-a")))
        .await
        .expect_err("no answer on the socket");
    let message = format!("{err:#}");
    assert!(message.contains("the ledger is in use"), "{message}");
    assert!(message.contains("api.sock"), "{message}");
    assert!(held.is_empty(), "nothing was written past the holder");
}

#[tokio::test]
async fn a_malformed_key_is_refused_with_the_expected_form() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (path, _) = config_in(dir.path());
    let err = run(exempt(&path, Some("Deployment/web"), None))
        .await
        .expect_err("malformed key");
    assert!(
        err.to_string()
            .contains("cluster/group/kind/namespace/name"),
        "{err:#}"
    );
}
