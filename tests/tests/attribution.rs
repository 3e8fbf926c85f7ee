//! Verdicts the audited cannot forge. A GitOps-managed Deployment is changed
//! with the built kubectl by `alice` and `mallory` the way someone who would
//! rather not be recorded would change it; Driftwarden runs with its own
//! audit webhook, fed by the real apiserver through the environment's relay
//! with the shipped audit policy and webhook files. Each test asserts the
//! exact verdict, the paths judged and the actor: the user and auditID from
//! the audit event, never the name the client chose.

use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use driftwarden_e2e::app::{paths, wired_deployment_yaml};
use driftwarden_e2e::scenario::{Bus, Found, PATIENCE, Scenario, records, wait_change};
use driftwarden_e2e::{User, logs, on_both_buses, on_the_embedded_bus};
use model::{Actor, DriftKind, Judgement, ObjectKey, PathVerdict, RecordBody, Verdict};

const DEPLOYMENT_FILE: &str = "apps/web/deployment.yaml";
const IMAGE: &str = "registry.invalid/shop/web:1.0.0";
const LABEL: &str = "metadata.labels.note";

/// The app committed and applied by `gitops`, then Driftwarden started with
/// its audit webhook.
async fn scenario(bus: Bus, name: &str) -> Result<Scenario> {
    logs::capture();
    let mut s = Scenario::prepare(bus, name, &["apps/v1/Deployment"]).await?;
    s.with_audit_webhook()?;
    let ns = s.namespace().to_string();
    s.repo
        .write(DEPLOYMENT_FILE, &wired_deployment_yaml(&ns, 2, IMAGE))?;
    s.commit("web: first release")?;
    s.apply_as_gitops(&[DEPLOYMENT_FILE])?;
    s.wait_for_revision("1").await?;
    s.start().await?;
    s.wait_first_records(&[s.deployment()]).await?;
    Ok(s)
}

/// The audit actor of change record `seq`: its own, or the one a later
/// attribution or amendment gave it.
async fn audit_actor(s: &Scenario, key: &ObjectKey, seq: u64) -> Result<Actor> {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let mut actor = None;
        for record in s.ledger().history(key)? {
            match record.body {
                RecordBody::Change { judgement, .. } if record.seq == seq => {
                    actor = Some(judgement.actor);
                }
                RecordBody::Attribution(a) if a.amends == seq => actor = Some(a.actor),
                RecordBody::Amendment(a) if a.amends == seq => actor = Some(a.judgement.actor),
                _ => {}
            }
        }
        if let Some(actor @ Actor::Audit { .. }) = actor {
            return Ok(actor);
        }
        if std::time::Instant::now() >= deadline {
            bail!(
                "record #{seq} of {key} got no audit actor; its history:\n{}",
                s.history_since(key, seq - 1)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asserts `actor` is `user` from an audit event.
fn assert_audited(actor: &Actor, user: &str) {
    match actor {
        Actor::Audit {
            user: who,
            groups,
            audit_id,
            ..
        } => {
            assert_eq!(who, user, "{actor:?}");
            assert!(!audit_id.is_empty(), "{actor:?}");
            assert!(
                groups.iter().any(|g| g == "system:authenticated"),
                "{actor:?}"
            );
            assert_eq!(actor.source(), "audit");
        }
        other => panic!("expected {user} from an audit event, got {other:?}"),
    }
}

/// The first change record about `key` after `after` whose judgement
/// satisfies `matches`.
async fn change(
    s: &Scenario,
    key: &ObjectKey,
    after: u64,
    what: &str,
    matches: impl Fn(&Judgement) -> bool,
) -> Result<Found> {
    wait_change(s.ledger(), key, after, PATIENCE, what, |_, j| matches(j)).await
}

fn judged(judgement: &Judgement, verdict: PathVerdict) -> Vec<String> {
    judgement
        .paths_judged(verdict)
        .map(ToString::to_string)
        .collect()
}

fn out_of_band(texts: &[&str]) -> Verdict {
    Verdict::Drift {
        drift: DriftKind::OutOfBand {
            paths: paths(texts),
        },
    }
}

// ---- scenarios ----

async fn alice_scales_and_the_ledger_names_her(bus: Bus) -> Result<()> {
    let s = scenario(bus, "attr-scale").await?;
    let key = s.deployment();
    let after = s.seq();
    s.kubectl(User::Alice, &["scale", "deployment/web", "--replicas=5"])?;
    let found = change(&s, &key, after, "the scale", |j| j.verdict.is_drift()).await?;
    assert_eq!(
        found.judgement.verdict,
        Verdict::Drift {
            drift: DriftKind::Modified {
                paths: paths(&["spec.replicas"])
            }
        }
    );
    assert_audited(&audit_actor(&s, &key, found.seq).await?, "alice");
    Ok(())
}

async fn mallory_adds_an_env_var_out_of_band(bus: Bus) -> Result<()> {
    let s = scenario(bus, "attr-env").await?;
    let key = s.deployment();
    let after = s.seq();
    s.kubectl(User::Mallory, &["set", "env", "deployment/web", "DEBUG=1"])?;
    let found = change(&s, &key, after, "the env var", |j| j.verdict.is_drift()).await?;
    assert_eq!(
        found.judgement.verdict,
        out_of_band(&["spec.template.spec.containers[name=web].env[name=DEBUG]"])
    );
    // The verdict depended on identity: it waited for the audit record.
    assert_audited(&found.judgement.actor, "mallory");
    Ok(())
}

async fn mallory_deletes_and_is_named(bus: Bus) -> Result<()> {
    let s = scenario(bus, "attr-delete").await?;
    let key = s.deployment();
    let after = s.seq();
    s.kubectl(User::Mallory, &["delete", "deployment/web", "--wait=false"])?;
    let found = change(&s, &key, after, "the deletion", |j| {
        j.verdict
            == Verdict::Drift {
                drift: DriftKind::Deleted,
            }
    })
    .await?;
    assert_audited(&audit_actor(&s, &key, found.seq).await?, "mallory");
    Ok(())
}

/// Mallory labels the Deployment under a trusted manager's name.
async fn spoofed_manager(bus: Bus, manager: &str) -> Result<()> {
    let s = scenario(bus, &format!("attr-spoof-{manager}")).await?;
    let key = s.deployment();
    let after = s.seq();
    s.kubectl(
        User::Mallory,
        &[
            "label",
            "deployment/web",
            "note=harmless",
            &format!("--field-manager={manager}"),
        ],
    )?;
    let found = change(&s, &key, after, "the label", |j| j.verdict.is_drift()).await?;
    assert_eq!(found.judgement.verdict, out_of_band(&[LABEL]));
    assert_audited(&found.judgement.actor, "mallory");
    match &found.judgement.actor {
        Actor::Audit {
            manager: Some(claimed),
            ..
        } => assert_eq!(claimed, manager),
        other => panic!("the claimed manager is not recorded: {other:?}"),
    }
    Ok(())
}

async fn a_spoofed_controller_manager_is_out_of_band(bus: Bus) -> Result<()> {
    spoofed_manager(bus, "kube-controller-manager").await
}

async fn a_spoofed_gitops_manager_is_out_of_band(bus: Bus) -> Result<()> {
    spoofed_manager(bus, "gitops").await
}

async fn replace_force_with_a_sidecar_is_out_of_band(bus: Bus) -> Result<()> {
    let s = scenario(bus, "attr-replace").await?;
    let key = s.deployment();
    let after = s.seq();
    let ns = s.namespace().to_string();
    let with_sidecar = wired_deployment_yaml(&ns, 2, IMAGE).replace(
        "      containers:\n",
        "      containers:\n        - name: miner\n          image: registry.invalid/evil:1\n",
    );
    assert!(with_sidecar.contains("miner"), "the sidecar went in");
    let file = s.repo.path().join("replace.yaml");
    std::fs::write(&file, &with_sidecar)?;
    let file = file.to_string_lossy().to_string();
    s.kubectl(User::Mallory, &["replace", "--force", "-f", &file])?;
    let found = change(&s, &key, after, "the re-created Deployment", |j| {
        matches!(
            j.verdict,
            Verdict::Drift {
                drift: DriftKind::OutOfBand { .. }
            }
        )
    })
    .await?;
    assert_eq!(
        found.judgement.verdict,
        out_of_band(&["spec.template.spec.containers[name=miner]"])
    );
    assert_audited(&found.judgement.actor, "mallory");
    Ok(())
}

async fn restoring_replicas_does_not_launder_a_label(bus: Bus) -> Result<()> {
    let s = scenario(bus, "attr-bundle").await?;
    let key = s.deployment();
    let after = s.seq();
    s.kubectl(User::Alice, &["scale", "deployment/web", "--replicas=5"])?;
    let scaled = change(&s, &key, after, "the scale", |j| j.verdict.is_drift()).await?;
    s.kubectl(
        User::Mallory,
        &[
            "patch",
            "deployment/web",
            "--type=merge",
            "-p",
            r#"{"spec":{"replicas":2},"metadata":{"labels":{"note":"harmless"}}}"#,
        ],
    )?;
    let found = change(&s, &key, scaled.seq, "the bundled patch", |_| true).await?;
    assert_eq!(found.judgement.verdict, out_of_band(&[LABEL]));
    assert_eq!(
        judged(&found.judgement, PathVerdict::Authorized),
        ["spec.replicas"]
    );
    assert_eq!(judged(&found.judgement, PathVerdict::OutOfBand), [LABEL]);
    assert_audited(&audit_actor(&s, &key, found.seq).await?, "mallory");
    Ok(())
}

async fn a_label_added_during_a_replicas_drift_is_recorded(bus: Bus) -> Result<()> {
    let s = scenario(bus, "attr-behind").await?;
    let key = s.deployment();
    let after = s.seq();
    s.kubectl(User::Alice, &["scale", "deployment/web", "--replicas=5"])?;
    let scaled = change(&s, &key, after, "the scale", |j| j.verdict.is_drift()).await?;
    s.kubectl(User::Mallory, &["label", "deployment/web", "note=harmless"])?;
    let found = change(&s, &key, scaled.seq, "the label", |j| {
        !judged(j, PathVerdict::OutOfBand).is_empty()
    })
    .await?;
    assert_eq!(
        found.judgement.verdict,
        Verdict::Drift {
            drift: DriftKind::Modified {
                paths: paths(&["spec.replicas"])
            }
        }
    );
    assert_eq!(judged(&found.judgement, PathVerdict::OutOfBand), [LABEL]);
    Ok(())
}

async fn diff_shows_an_out_of_band_sidecar_and_who_added_it(bus: Bus) -> Result<()> {
    let s = scenario(bus, "attr-diff").await?;
    let key = s.deployment();
    let after = s.seq();
    s.kubectl(
        User::Mallory,
        &[
            "patch",
            "deployment/web",
            "--type=strategic",
            "-p",
            r#"{"spec":{"template":{"spec":{"containers":[{"name":"miner","image":"registry.invalid/evil:1"}]}}}}"#,
        ],
    )?;
    let found = change(&s, &key, after, "the sidecar", |j| j.verdict.is_drift()).await?;
    let (desired, _, _) = driftwarden::desired::open_sources(&s.config, None, &[]).await?;
    let drift = driftwarden::inspect::drift(
        s.ledger(),
        &desired,
        &driftwarden::keys::digest_key(&s.config)?,
    )?;
    let sidecar = drift
        .iter()
        .find(|d| d.change.path.to_string() == "spec.template.spec.containers[name=miner]")
        .with_context(|| format!("diff does not show the sidecar: {drift:#?}"))?;
    assert_eq!(sidecar.class, driftwarden::inspect::DriftClass::OutOfBand);
    assert_eq!(sidecar.opened_by_record, Some(found.seq));
    assert_audited(sidecar.actor.as_ref().context("no actor")?, "mallory");
    let text = driftwarden::inspect::drift_text(&drift, s.seq());
    assert!(
        text.contains("containers[name=miner]: out of band"),
        "{text}"
    );
    assert!(text.contains("by mallory"), "{text}");
    Ok(())
}

async fn an_unauthenticated_post_to_the_webhook_is_refused(bus: Bus) -> Result<()> {
    let s = scenario(bus, "attr-refuse").await?;
    let webhook = s.settings.audit_webhook.clone().context("webhook on")?;
    let counters = s.audit_webhook_counters().context("webhook running")?;
    let before = counters.refused();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(s.env.ca_cert())?)?;
    let client = reqwest::Client::builder()
        .add_root_certificate(ca)
        .build()?;
    let forged = r#"{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[]}"#;
    let response = client.post(webhook.url()).body(forged).send().await?;
    assert_eq!(response.status(), reqwest::StatusCode::UNAUTHORIZED);
    let response = client
        .post(webhook.url())
        .bearer_auth("not-the-token-at-all")
        .body(forged)
        .send()
        .await?;
    assert_eq!(response.status(), reqwest::StatusCode::UNAUTHORIZED);
    assert_eq!(counters.refused(), before + 2);
    Ok(())
}

async fn the_ledger_keeps_writes_rbac_refused(bus: Bus) -> Result<()> {
    let s = scenario(bus, "attr-denied").await?;
    let after = s.seq();
    // Alice may edit only team namespaces she is granted; not RBAC itself.
    let denied = s.env.kubectl(
        User::Alice,
        &[
            "-n",
            s.namespace(),
            "create",
            "rolebinding",
            "escalate",
            "--clusterrole=admin",
            "--user=alice",
        ],
    )?;
    assert!(!denied.status.success(), "alice may not bind admin");
    let record = driftwarden_e2e::scenario::wait_record(
        s.ledger(),
        after,
        PATIENCE,
        "the refused write",
        |body| matches!(body, RecordBody::Refused(r) if r.user.username == "alice"),
    )
    .await?;
    let RecordBody::Refused(refused) = record.body else {
        unreachable!()
    };
    assert_eq!(refused.response_code, 403);
    assert_eq!(refused.verb, "create");
    Ok(())
}

async fn a_late_audit_record_amends_the_fallback_verdict(bus: Bus) -> Result<()> {
    logs::capture();
    let mut s = Scenario::prepare(bus, "attr-late", &["apps/v1/Deployment"]).await?;
    // The webhook is configured, but the relay does not feed it: the audit
    // events arrive late, posted by hand as the apiserver's retries would.
    s.with_audit_webhook()?;
    let ns = s.namespace().to_string();
    s.repo
        .write(DEPLOYMENT_FILE, &wired_deployment_yaml(&ns, 2, IMAGE))?;
    s.commit("web: first release")?;
    s.apply_as_gitops(&[DEPLOYMENT_FILE])?;
    s.wait_for_revision("1").await?;
    let mut audit_log = s.env.audit_log()?;
    s.start_without_relay().await?;
    s.wait_first_records(&[s.deployment()]).await?;
    let key = s.deployment();
    let after = s.seq();
    s.kubectl(User::Mallory, &["label", "deployment/web", "note=harmless"])?;
    let found = change(&s, &key, after, "the label", |j| j.verdict.is_drift()).await?;
    // Judged after the join wait with the managedFields fallback.
    assert_eq!(found.judgement.verdict, out_of_band(&[LABEL]));
    assert_eq!(found.judgement.actor.source(), "managed_fields");
    // Now the webhook comes back: the apiserver's batch arrives.
    let events = audit_log
        .wait_for(PATIENCE, |event| {
            event["user"]["username"] == "mallory"
                && event["verb"] == "patch"
                && event["objectRef"]["namespace"] == ns.as_str()
                && event["objectRef"]["name"] == "web"
        })
        .await?;
    let webhook = s.settings.audit_webhook.clone().context("webhook on")?;
    let ca = reqwest::Certificate::from_pem(&std::fs::read(s.env.ca_cert())?)?;
    let batch = serde_json::json!({
        "kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": [events]
    });
    let response = reqwest::Client::builder()
        .add_root_certificate(ca)
        .build()?
        .post(webhook.url())
        .bearer_auth(&webhook.token)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&batch)?)
        .send()
        .await?;
    assert!(response.status().is_success(), "{response:?}");
    assert_audited(&audit_actor(&s, &key, found.seq).await?, "mallory");
    let all = records(s.ledger())?;
    assert!(
        all.iter()
            .any(|r| matches!(&r.body, RecordBody::Attribution(a) if a.amends == found.seq)),
        "an attribution record names the actor"
    );
    Ok(())
}

on_both_buses! {
    alice_scales_and_the_ledger_names_her => alice_scales_embedded, alice_scales_kafka;
    mallory_adds_an_env_var_out_of_band => env_var_embedded, env_var_kafka;
    mallory_deletes_and_is_named => delete_embedded, delete_kafka;
    a_spoofed_controller_manager_is_out_of_band
        => spoofed_controller_manager_embedded, spoofed_controller_manager_kafka;
    a_spoofed_gitops_manager_is_out_of_band => spoofed_gitops_embedded, spoofed_gitops_kafka;
    replace_force_with_a_sidecar_is_out_of_band => replace_force_embedded, replace_force_kafka;
    restoring_replicas_does_not_launder_a_label => bundled_patch_embedded, bundled_patch_kafka;
    a_label_added_during_a_replicas_drift_is_recorded
        => drift_behind_drift_embedded, drift_behind_drift_kafka;
    diff_shows_an_out_of_band_sidecar_and_who_added_it => diff_sidecar_embedded, diff_sidecar_kafka;
    the_ledger_keeps_writes_rbac_refused => rbac_refused_embedded, rbac_refused_kafka;
    a_late_audit_record_amends_the_fallback_verdict => late_audit_embedded, late_audit_kafka;
}

// The webhook's authentication does not involve the bus.
on_the_embedded_bus! {
    an_unauthenticated_post_to_the_webhook_is_refused => unauthenticated_post_embedded;
}
