//! `driftwarden exempt` and `resume` without a running Driftwarden write the
//! ledger directly; with one running (the ledger held), they leave a request.

use std::path::Path;
use std::time::Duration;

use driftwarden::cli::{Cli, Command, Output, run};
use driftwarden::config::Config;
use model::{ExemptionScope, RecordBody};

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
async fn requests_wait_for_the_running_driftwarden_that_holds_the_ledger() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (path, config) = config_in(dir.path());
    let held = driftwarden::run::open_ledger(&config).expect("ledger");

    let outcome = run(exempt(&path, None, Some("team-a")))
        .await
        .expect("exempt");
    assert!(outcome.text.contains("request left in"), "{}", outcome.text);
    let resume = Cli {
        output: Output::Human,
        command: Command::Resume {
            config: path.clone(),
            reason: "incident over".into(),
        },
    };
    run(resume).await.expect("resume");

    let requests =
        driftwarden::requests::take(&driftwarden::requests::folder(&config)).expect("take");
    let records: Vec<RecordBody> = requests.iter().map(|r| r.record()).collect();
    assert!(matches!(&records[0], RecordBody::Exemption(e)
        if e.scope == ExemptionScope::Namespace { cluster: "prod".into(), namespace: "team-a".into() }));
    assert!(
        matches!(&records[1], RecordBody::Control(model::Control::Resumed { reason })
        if reason.starts_with("incident over"))
    );
    assert!(
        held.is_empty(),
        "nothing was written past the running process"
    );
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
