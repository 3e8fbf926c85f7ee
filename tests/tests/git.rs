//! Desired state Driftwarden can rely on, end to end against the real
//! apiserver and real git repositories: git's progress lives in the ledger
//! (a `diff` between a commit and a restart moves nothing), a force-push is
//! recorded with the commits it dropped, git that goes away pauses
//! enforcement instead of reverting a deploy it could not fetch, and only
//! what is ours is judged or pruned.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use driftwarden::run::open_ledger;
use driftwarden_e2e::app::config_map_yaml;
use driftwarden_e2e::enforcing::{Enforcing, Rule};
use driftwarden_e2e::git::Served;
use driftwarden_e2e::scenario::{
    Bus, Found, PATIENCE, Scenario, describe, key, records, wait_record,
};
use driftwarden_e2e::{User, eventually, on_the_embedded_bus, unique_suffix};
use model::{
    Amendment, DriftKind, Enforcement, GitFetch, GitFetchState, ObjectKey, Outcome, RecordBody,
    Verdict,
};
use serde_json::json;

on_the_embedded_bus! {
    a_deploy_while_git_is_away_is_not_reverted_and_is_authorized_after => git_outage_embedded;
    run_starts_from_its_clone_while_git_is_away => start_without_git_embedded;
    diff_between_a_commit_and_a_restart_moves_nothing => diff_then_restart_embedded;
    a_force_push_is_recorded_and_a_dropped_commits_state_is_a_rollback => force_push_embedded;
    one_cluster_role_in_git_leaves_every_other_cluster_role_alone => cluster_roles_embedded;
    prune_deletes_only_what_an_untrusted_actor_created_while_watched => prune_scope_embedded;
    files_git_cannot_read_are_ledger_records_with_their_line => git_errors_embedded;
}

const FILE: &str = "apps/settings.yaml";

/// ConfigMap `settings` of `namespace` with `level`.
fn settings_yaml(namespace: &str, level: &str) -> String {
    config_map_yaml(
        namespace,
        "settings",
        &[("app", "web")],
        &[("level", level)],
    )
}

/// A scenario whose git declares ConfigMap `settings` at `level: info`,
/// applied as the GitOps agent, under one enforcing rule for its namespace
/// (and `rules` besides), not started.
async fn declared(bus: Bus, name: &str, rules: Vec<Rule>) -> Result<Scenario> {
    let mut s = Scenario::prepare(bus, name, &[]).await?;
    s.repo.write(FILE, &settings_yaml(s.namespace(), "info"))?;
    s.commit("Declare settings (OPS-1)")?;
    s.apply_as_gitops(&[FILE])?;
    let mut enforcing = Enforcing::new(s.settings.clone());
    enforcing.rules = rules;
    enforcing
        .rules
        .push(Rule::new("team", model::Mode::Enforce).in_namespace(s.namespace()));
    s.config = enforcing.config()?;
    Ok(s)
}

/// The first fetch record of state `state` after `after`.
async fn fetch_record(s: &Scenario, after: u64, state: &str) -> Result<GitFetch> {
    let found = wait_record(
        s.ledger(),
        after,
        PATIENCE,
        state,
        |body| matches!(body, RecordBody::GitFetch(fetch) if state_name(&fetch.state) == state),
    )
    .await?;
    match found.body {
        RecordBody::GitFetch(fetch) => Ok(fetch),
        other => anyhow::bail!("not a fetch record: {other:?}"),
    }
}

fn state_name(state: &GitFetchState) -> &'static str {
    match state {
        GitFetchState::Failing { .. } => "failing",
        GitFetchState::Stale { .. } => "stale",
        GitFetchState::Recovered { .. } => "recovered",
    }
}

fn level(object: &serde_json::Value) -> Option<&str> {
    object.pointer("/data/level")?.as_str()
}

/// Mallory sets ConfigMap `settings` to `value` by hand: its judged change.
async fn mallory_sets_level(s: &Scenario, value: &str) -> Result<Found> {
    let after = s.seq();
    let patch = json!({"data": {"level": value}}).to_string();
    s.kubectl(
        User::Mallory,
        &["patch", "configmap", "settings", "-p", &patch],
    )?;
    s.change(&s.config_map("settings"), after, "mallory's change", |e| {
        level(&e.object) == Some(value)
    })
    .await
}

/// Git moves away; past `max_staleness` the GitOps user deploys a commit
/// Driftwarden cannot fetch. The deploy is judged drift marked `git_stale`
/// and held, never reverted; when git is back the outage and the recovery
/// are in the ledger and the deploy is amended to `authorized` by its
/// commit.
async fn a_deploy_while_git_is_away_is_not_reverted_and_is_authorized_after(
    bus: Bus,
) -> Result<()> {
    let strays = Rule::new("strays", model::Mode::Enforce)
        .labelled("stray", "yes")
        .pruning();
    let mut s = declared(bus, "git-outage", vec![strays]).await?;
    let limits_file = "apps/limits.yaml";
    let limits_yaml = config_map_yaml(s.namespace(), "limits", &[], &[("max", "10")]);
    s.repo.write(limits_file, &limits_yaml)?;
    s.commit("Declare limits (OPS-9)")?;
    s.apply_as_gitops(&[limits_file])?;
    let served = Served::new(&s.repo)?;
    s.config.sources[0].url = served.url();
    s.config.sources[0].max_staleness = Duration::from_secs(1);
    let settings = s.config_map("settings");
    let limits = s.config_map("limits");
    s.start().await?;
    s.wait_first_records(&[settings.clone(), limits.clone()])
        .await?;

    let before = s.seq();
    served.take_away()?;
    let failing = fetch_record(&s, before, "failing").await?;
    ensure!(
        matches!(&failing.state, GitFetchState::Failing { error, .. } if !error.is_empty()),
        "{failing:?}"
    );
    fetch_record(&s, before, "stale").await?;

    s.repo.write(FILE, &settings_yaml(s.namespace(), "debug"))?;
    let deploy = s.commit("Debug logging (OPS-2)")?;
    let after = s.seq();
    s.apply_as_gitops(&[FILE])?;
    let judged = s
        .change(&settings, after, "the deploy", |e| {
            level(&e.object) == Some("debug")
        })
        .await?;
    ensure!(
        judged.judgement.verdict.is_drift(),
        "{:?}",
        judged.judgement
    );
    ensure!(
        judged.judgement.git_stale,
        "marked git_stale: {:?}",
        judged.judgement
    );
    let (_, held) = s.answer(&settings, judged.seq).await?;
    ensure!(
        matches!(&held.outcome, Outcome::Held { reason } if reason.contains("stale")),
        "{held:?}"
    );

    // Mallory uses the outage too: her change is recorded and held.
    let after_mallory = s.seq();
    s.kubectl(
        User::Mallory,
        &[
            "patch",
            "configmap",
            "limits",
            "-p",
            r#"{"data":{"max":"1000"}}"#,
        ],
    )?;
    let hers = s
        .change(&limits, after_mallory, "mallory's change", |e| {
            e.object.pointer("/data/max") == Some(&json!("1000"))
        })
        .await?;
    ensure!(hers.judgement.git_stale && hers.judgement.verdict.is_drift());
    let (_, held) = s.answer(&limits, hers.seq).await?;
    ensure!(matches!(held.outcome, Outcome::Held { .. }), "{held:?}");
    let stray = s.config_map("stray");
    let ns = s.namespace().to_owned();
    s.create(
        User::Mallory,
        &config_map_yaml(&ns, "stray", &[("stray", "yes")], &[("a", "1")]),
    )?;
    let created = s
        .change(&stray, after_mallory, "stray created", |_| true)
        .await?;
    ensure!(created.judgement.git_stale, "{:?}", created.judgement);
    let (_, held) = s.answer(&stray, created.seq).await?;
    ensure!(matches!(held.outcome, Outcome::Held { .. }), "{held:?}");

    served.bring_back()?;
    s.fetch_now();
    let recovered = fetch_record(&s, after, "recovered").await?;
    ensure!(
        matches!(&recovered.state, GitFetchState::Recovered { head, .. } if *head == deploy),
        "{recovered:?}"
    );
    let amended = wait_record(s.ledger(), after, PATIENCE, "the deploy judged again", |body| {
        matches!(body, RecordBody::Amendment(Amendment { amends, .. }) if *amends == judged.seq)
    })
    .await?;
    let RecordBody::Amendment(amendment) = amended.body else {
        unreachable!("matched an amendment");
    };
    assert_eq!(
        amendment.judgement.verdict,
        Verdict::Authorized {
            commit: deploy.clone()
        },
        "{}",
        s.history_since(&settings, after)
    );
    let live = s
        .live("configmap", "settings")?
        .context("settings exists")?;
    assert_eq!(level(&live), Some("debug"), "the deploy stays");
    let reverts: Vec<Enforcement> = s
        .enforcements(&settings, after)?
        .into_iter()
        .map(|(_, e)| e)
        .filter(|e| matches!(e.outcome, Outcome::Reverted { .. }))
        .collect();
    assert!(reverts.is_empty(), "{reverts:?}");

    // Mallory's change, judged again with git fresh, is reverted now.
    let again = wait_record(s.ledger(), hers.seq, PATIENCE, "hers judged again", |body| {
        matches!(body, RecordBody::Amendment(Amendment { amends, .. }) if *amends == hers.seq)
    })
    .await?;
    let (_, reverted) = s.answer(&limits, again.seq).await?;
    ensure!(
        matches!(reverted.outcome, Outcome::Reverted { .. }),
        "{reverted:?}\n{}",
        s.history_since(&limits, 0)
    );
    s.wait_live("limits reverted", "configmap", "limits", |live| {
        live.and_then(|l| l.pointer("/data/max")) == Some(&json!("10"))
    })
    .await?;
    // So is her unmanaged object, created while git was away: pruned.
    s.wait_live("stray pruned", "configmap", "stray", |live| live.is_none())
        .await
        .with_context(|| s.history_since(&stray, 0))?;
    s.stop().await;
    Ok(())
}

/// `run` started while git is unreachable uses the desired state of its
/// clone: it records the outage and keeps judging.
async fn run_starts_from_its_clone_while_git_is_away(bus: Bus) -> Result<()> {
    let mut s = declared(bus, "git-away-start", Vec::new()).await?;
    let served = Served::new(&s.repo)?;
    s.config.sources[0].url = served.url();
    let settings = s.config_map("settings");
    s.start().await?;
    s.wait_first_records(std::slice::from_ref(&settings))
        .await?;
    s.stop().await;

    served.take_away()?;
    s.start().await.context("run starts with git away")?;
    let failing = fetch_record(&s, 0, "failing").await?;
    ensure!(failing.source == "apps", "{failing:?}");
    let drift = mallory_sets_level(&s, "trace").await?;
    assert!(
        matches!(
            &drift.judgement.verdict,
            Verdict::Drift {
                drift: DriftKind::Modified { .. }
            }
        ),
        "judged against the clone's desired state: {:?}",
        drift.judgement
    );
    s.stop().await;
    Ok(())
}

/// A commit made while Driftwarden is stopped, then `diff`: the restart
/// still records the commit's arrival, because `diff` reads git without
/// moving it.
async fn diff_between_a_commit_and_a_restart_moves_nothing(bus: Bus) -> Result<()> {
    let mut s = declared(bus, "git-diff", Vec::new()).await?;
    let settings = s.config_map("settings");
    s.start().await?;
    s.wait_first_records(std::slice::from_ref(&settings))
        .await?;
    s.stop().await;

    s.repo.write(FILE, &settings_yaml(s.namespace(), "warn"))?;
    let commit = s.commit("Quieter (OPS-3)")?;
    {
        let ledger = open_ledger(&s.config)?;
        let (desired, _, _) =
            driftwarden::desired::open_sources(&s.config, Some(&ledger), &[]).await?;
        let drift = driftwarden::inspect::drift(
            &ledger,
            &desired,
            &driftwarden::keys::digest_key(&s.config)?,
        )?;
        ensure!(
            drift.iter().any(|open| open.key == settings),
            "diff sees the cluster behind the new commit: {drift:?}"
        );
    }

    s.start().await?;
    let synced = wait_record(
        s.ledger(),
        0,
        PATIENCE,
        "the commit recorded",
        |body| matches!(body, RecordBody::GitSync(sync) if sync.commit.id == commit),
    )
    .await;
    synced.with_context(|| describe(&records(s.ledger()).unwrap_or_default()))?;
    s.stop().await;
    Ok(())
}

/// A force-push that drops a deployed commit is recorded as a rewrite
/// naming it; the live state of the dropped commit is then a rollback to it.
async fn a_force_push_is_recorded_and_a_dropped_commits_state_is_a_rollback(
    bus: Bus,
) -> Result<()> {
    let mut s = declared(bus, "git-force-push", Vec::new()).await?;
    let settings = s.config_map("settings");
    let first = s.head().to_owned();
    s.start().await?;
    s.wait_first_records(std::slice::from_ref(&settings))
        .await?;

    s.repo.write(FILE, &settings_yaml(s.namespace(), "debug"))?;
    let dropped = s.commit_and_sync("Debug logging (OPS-4)").await?;
    let after = s.seq();
    s.apply_as_gitops(&[FILE])?;
    s.change(&settings, after, "debug deployed", |e| {
        level(&e.object) == Some("debug")
    })
    .await?;

    s.repo.reset_to(&first)?;
    s.repo.write(FILE, &settings_yaml(s.namespace(), "warn"))?;
    let after = s.seq();
    let replacement = s.commit_and_sync("Warn only (OPS-5)").await?;
    let rewrite = wait_record(s.ledger(), after, PATIENCE, "the rewrite", |body| {
        matches!(body, RecordBody::GitRewrite(_))
    })
    .await?;
    let RecordBody::GitRewrite(rewrite) = rewrite.body else {
        unreachable!("matched a rewrite");
    };
    assert_eq!(
        (rewrite.from.as_str(), rewrite.to.as_str()),
        (dropped.as_str(), replacement.as_str())
    );
    let dropped_ids: Vec<&str> = rewrite.dropped.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(dropped_ids, [dropped.as_str()]);

    s.apply_as_gitops(&[FILE])?;
    s.change(&settings, after, "warn deployed", |e| {
        level(&e.object) == Some("warn")
    })
    .await?;
    let rollback = mallory_sets_level(&s, "debug").await?;
    assert!(
        matches!(
            &rollback.judgement.verdict,
            Verdict::Drift { drift: DriftKind::Rollback { commit, .. } } if *commit == dropped
        ),
        "{:?}\n{}",
        rollback.judgement,
        s.history_since(&settings, 0)
    );
    s.stop().await;
    Ok(())
}

/// A repository declaring one ClusterRole, with `prune` on in enforce mode
/// over everything: the declared role is judged, every other ClusterRole
/// (the bootstrap `system:*` ones, one created while watched) is neither
/// judged nor touched.
async fn one_cluster_role_in_git_leaves_every_other_cluster_role_alone(bus: Bus) -> Result<()> {
    let suffix = unique_suffix();
    let ours = format!("e2e-ours-{suffix}");
    let other = format!("e2e-other-{suffix}");
    let role = |name: &str| {
        format!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: {name}\n\
             rules:\n  - apiGroups: [\"\"]\n    resources: [configmaps]\n    verbs: [get]\n"
        )
    };
    let everything = Rule::new("everything", model::Mode::Enforce).pruning();
    let mut s = declared(bus, "git-cluster-roles", vec![everything]).await?;
    s.repo.write("apps/role.yaml", &role(&ours))?;
    s.commit("Our role (OPS-6)")?;
    s.apply_as_gitops(&["apps/role.yaml"])?;
    let key_of = |name: &str| {
        ObjectKey::new(
            driftwarden_e2e::scenario::CLUSTER,
            "rbac.authorization.k8s.io",
            "ClusterRole",
            "",
            name,
        )
    };
    s.start().await?;
    s.wait_first_records(&[key_of(&ours), s.config_map("settings")])
        .await?;
    s.create(User::Admin, &role(&other))?;

    // A drift Driftwarden acts on, after the other role's creation: once
    // it is answered, everything before it has been decided.
    let settings = s.config_map("settings");
    let drift = mallory_sets_level(&s, "trace").await?;
    s.answer(&settings, drift.seq).await?;

    let judged_roles: Vec<String> = records(s.ledger())?
        .into_iter()
        .filter_map(|record| match record.body {
            RecordBody::Change { event, .. } if event.key.kind == "ClusterRole" => {
                Some(event.key.name)
            }
            _ => None,
        })
        .collect();
    ensure!(
        judged_roles.iter().all(|name| *name == ours),
        "only the declared role is judged: {judged_roles:?}"
    );

    // The declared role itself is enforced: a label added by hand is
    // drift, and reverted by Driftwarden's ServiceAccount.
    let after = s.seq();
    s.env
        .kubectl_ok(User::Admin, &["label", "clusterrole", &ours, "by-hand=yes"])?;
    let labelled = s
        .change(&key_of(&ours), after, "the label by hand", |e| {
            e.object.pointer("/metadata/labels/by-hand").is_some()
        })
        .await?;
    let (_, reverted) = s.answer(&key_of(&ours), labelled.seq).await?;
    ensure!(
        matches!(reverted.outcome, Outcome::Reverted { .. }),
        "the declared ClusterRole's drift is not reverted: {reverted:?}"
    );
    eventually(PATIENCE, "the label reverted", || async {
        let live = s
            .env
            .kubectl_ok(User::Admin, &["get", "clusterrole", &ours, "-o", "json"])?;
        let live: serde_json::Value = serde_json::from_str(&live)?;
        Ok(live
            .pointer("/metadata/labels/by-hand")
            .is_none()
            .then_some(()))
    })
    .await?;
    for name in [other.as_str(), "system:node", "admin", "edit"] {
        s.env
            .kubectl_ok(User::Admin, &["get", "clusterrole", name])
            .with_context(|| format!("ClusterRole {name} is left alone"))?;
    }
    s.env
        .kubectl_ok(User::Admin, &["delete", "clusterrole", &other, &ours])?;
    s.stop().await;
    Ok(())
}

/// With `prune` on, an object that existed before Driftwarden watched is
/// never deleted; one an untrusted actor creates while it watches is.
async fn prune_deletes_only_what_an_untrusted_actor_created_while_watched(bus: Bus) -> Result<()> {
    let mut s = Scenario::prepare(bus, "git-prune", &["v1/ConfigMap"]).await?;
    s.repo.write(FILE, &settings_yaml(s.namespace(), "info"))?;
    s.commit("Declare settings (OPS-7)")?;
    s.apply_as_gitops(&[FILE])?;
    let mut enforcing = Enforcing::new(s.settings.clone());
    enforcing.rules = vec![
        Rule::new("team", model::Mode::Enforce)
            .in_namespace(s.namespace())
            .pruning(),
        Rule::new("later", model::Mode::Enforce)
            .in_namespace(s.namespace())
            .labelled("later", "yes")
            .with_grace(Duration::from_secs(3600))
            .pruning(),
    ];
    s.config = enforcing.config()?;
    let ns = s.namespace().to_owned();
    s.create(
        User::Mallory,
        &config_map_yaml(&ns, "before", &[], &[("a", "1")]),
    )?;
    let before = key("v1", "ConfigMap", &ns, "before");
    s.start().await?;
    let found = s
        .change(&before, 0, "the object found at start", |_| true)
        .await?;
    s.assert_verdict(&before, 0, &found, &Verdict::Unmanaged);

    let stray = key("v1", "ConfigMap", &ns, "stray");
    let after = s.seq();
    s.create(
        User::Mallory,
        &config_map_yaml(&ns, "stray", &[], &[("a", "1")]),
    )?;
    let created = s.change(&stray, after, "stray created", |_| true).await?;
    s.assert_verdict(&stray, after, &created, &Verdict::Unmanaged);
    let (_, deleted) = s.answer(&stray, created.seq).await?;
    ensure!(
        matches!(deleted.outcome, Outcome::Reverted { .. }),
        "{deleted:?}"
    );
    s.wait_live("stray pruned", "configmap", "stray", |live| live.is_none())
        .await?;

    let enforced: Vec<_> = s.enforcements(&before, 0)?;
    ensure!(
        enforced.is_empty(),
        "nothing done to `before`: {enforced:?}"
    );
    let live = s.live("configmap", "before")?;
    ensure!(live.is_some(), "`before` is still there");
    ensure!(json!(live.as_ref().and_then(|l| l.pointer("/data/a"))) == json!("1"));

    // One more stray waits out its grace: `check` names it as what prune
    // could delete, and nothing else.
    let later = key("v1", "ConfigMap", &ns, "stray-later");
    let after = s.seq();
    s.create(
        User::Mallory,
        &config_map_yaml(&ns, "stray-later", &[("later", "yes")], &[("a", "1")]),
    )?;
    s.change(&later, after, "stray-later created", |_| true)
        .await?;
    s.stop().await;
    let config_file = s.repo.path().with_extension("config.yaml");
    std::fs::write(&config_file, enforcing.yaml()?)?;
    let check = driftwarden::cli::Cli {
        output: driftwarden::cli::Output::Human,
        remote: Default::default(),
        command: driftwarden::cli::Command::Check {
            config: config_file.clone(),
            object: None,
            labels: Vec::new(),
            rbac: false,
            service_account: Default::default(),
        },
    };
    let text = driftwarden::cli::run(check).await?.text;
    std::fs::remove_file(&config_file)?;
    ensure!(text.contains("prune could delete 1 object(s):"), "{text}");
    ensure!(
        text.contains(&format!("{later} (policy later): created by")),
        "{text}"
    );
    Ok(())
}

/// A file that does not parse, a manifest without `apiVersion` and an
/// anchor bomb are each a `git_error` record naming the file, the commit and
/// the line; the objects declared next to them are judged as usual.
async fn files_git_cannot_read_are_ledger_records_with_their_line(bus: Bus) -> Result<()> {
    let mut s = declared(bus, "git-errors", Vec::new()).await?;
    let settings = s.config_map("settings");
    s.start().await?;
    s.wait_first_records(std::slice::from_ref(&settings))
        .await?;

    let bomb = {
        let mut text = String::from("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bomb\n");
        text.push_str(
            "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
        );
        for (name, previous) in ["bcdefghi".chars().zip("abcdefgh".chars())]
            .into_iter()
            .flatten()
        {
            let refs = vec![format!("*{previous}"); 9].join(",");
            text.push_str(&format!("{name}: &{name} [{refs}]\n"));
        }
        text
    };
    let files = [
        (
            "apps/syntax.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  labels: [a\n".to_owned(),
            6,
        ),
        (
            "apps/no-version.yaml",
            "# a comment\nkind: ConfigMap\nmetadata:\n  name: y\n".to_owned(),
            2,
        ),
        ("apps/bomb.yaml", bomb, 0),
    ];
    for (file, text, _) in &files {
        s.repo.write(file, text)?;
    }
    let after = s.seq();
    let commit = s.commit_and_sync("Three broken files (OPS-8)").await?;
    for (file, _, line) in &files {
        let found = wait_record(
            s.ledger(),
            after,
            PATIENCE,
            file,
            |body| matches!(body, RecordBody::GitError(e) if e.file == *file),
        )
        .await?;
        let RecordBody::GitError(error) = found.body else {
            unreachable!("matched a git error");
        };
        assert_eq!(error.commit, commit, "{error:?}");
        assert!(!error.message.is_empty(), "{error:?}");
        match (line, error.line) {
            (0, Some(_)) => {}
            (line, Some(found)) => assert_eq!(found, *line, "{error:?}"),
            (_, None) => panic!("no line in {error:?}"),
        }
    }
    s.stop().await;
    Ok(())
}
