//! The port contracts, run against every adapter that implements them: the Directory,
//! AuditLog and MailQueue ports on SQLite and on PostgreSQL; the SessionStore and Counters
//! ports on Redis and on the in-process store of the embedded default. The use-cases rely
//! on exactly these behaviours, whichever adapter is configured.

use std::collections::HashSet;

use latchkey::cache::{MemoryStore, RedisStore};
use latchkey::crypto::tokens;
use latchkey::domain::account::PasswordState;
use latchkey::domain::session::{AuthMethod, SessionKind, SessionRecord};
use latchkey::domain::{Agency, AgencyId, EmailAddress, Role, StaffAccount, StaffId, StaffStatus};
use latchkey::idm::ports::{
    AuditEvent, AuditLog, Counters, Directory, FailureCount, MailQueue, OutgoingMail,
    PasswordChange, PortError, SessionStore, StaffFilter,
};
use latchkey::store::SqlStore;
use reqwest::StatusCode;
use sqlx::Connection;

use crate::helpers::{Db, TestOptions, assert_status, required_env, spawn_app_on, spawn_app_with};

// ------------------------------------------------------------------ SQL adapters

/// A migrated store on a fresh database; the temporary folder keeps a SQLite file alive.
async fn fresh_sql_store(db: Db) -> (SqlStore, Option<tempfile::TempDir>) {
    match db {
        Db::Sqlite => {
            let dir = tempfile::tempdir().expect("tempdir");
            let url = format!("sqlite://{}/contract.db", dir.path().display());
            let store = SqlStore::connect(&url, 5).await.expect("connect SQLite");
            store.migrate().await.expect("migrate SQLite");
            (store, Some(dir))
        }
        Db::Postgres => {
            let admin_url = required_env("LATCHKEY_TEST_POSTGRES_URL");
            let name = format!("latchkey_test_{}", &tokens::random_id()[..12]);
            let mut conn = sqlx::PgConnection::connect(&admin_url)
                .await
                .expect("cannot connect to PostgreSQL");
            sqlx::Executor::execute(&mut conn, format!("CREATE DATABASE {name}").as_str())
                .await
                .expect("CREATE DATABASE");
            let base = admin_url
                .rsplit_once('/')
                .map_or(admin_url.as_str(), |(b, _)| b);
            let store = SqlStore::connect(&format!("{base}/{name}"), 5)
                .await
                .expect("connect PostgreSQL");
            store.migrate().await.expect("migrate PostgreSQL");
            (store, None)
        }
    }
}

fn email(text: &str) -> EmailAddress {
    EmailAddress::parse(text).expect("email")
}

fn agency(slug: &str) -> Agency {
    Agency {
        id: AgencyId(tokens::random_id()),
        slug: slug.to_owned(),
        name: format!("Agency {slug}"),
        sso_enabled: false,
    }
}

fn account(agency: &Agency, address: &str, name: &str, role: Role) -> StaffAccount {
    StaffAccount {
        id: StaffId(tokens::random_id()),
        agency_id: agency.id.clone(),
        email: email(address),
        name: name.to_owned(),
        role,
        status: StaffStatus::Active,
        password_hash: Some("$argon2id$v=19$m=1024,t=1,p=1$c2FsdHNhbHQ$aGFzaA".into()),
        password_state: PasswordState::Chosen,
        password_version: 0,
        created_at: 1_000,
    }
}

fn audit(agency: &Agency, event: &'static str, at: i64) -> AuditEvent {
    AuditEvent {
        agency_id: Some(agency.id.clone()),
        at,
        event,
        actor: None,
        subject: None,
        ip: "192.0.2.1".into(),
        detail: String::new(),
    }
}

fn mail(to: &str, subject: &str, expires_at: Option<i64>) -> OutgoingMail {
    OutgoingMail {
        to: email(to),
        subject: subject.to_owned(),
        text: format!("text of {subject}"),
        html: format!("<p>html of {subject}</p>"),
        expires_at,
    }
}

fn change(agency: &Agency, hash: &str, at: i64, notify: Option<OutgoingMail>) -> PasswordChange {
    PasswordChange {
        hash: hash.to_owned(),
        state: PasswordState::Temporary {
            expires_at: at + 3_600,
        },
        changed_at: at,
        audit: audit(agency, "admin_password_reset", at),
        notify,
    }
}

fn ids(accounts: &[StaffAccount]) -> Vec<String> {
    accounts.iter().map(|a| a.id.0.clone()).collect()
}

fn ids_of(accounts: &[&StaffAccount]) -> Vec<String> {
    accounts.iter().map(|a| a.id.0.clone()).collect()
}

async fn agencies_and_staff_round_trip(store: &SqlStore) {
    assert_eq!(store.count_agencies().await.unwrap(), 0, "fresh database");
    let harbour = agency(&format!("harbour-{}", &tokens::random_id()[..6]));
    let rival = agency(&format!("rival-{}", &tokens::random_id()[..6]));
    store.create_agency(&harbour).await.unwrap();
    store.create_agency(&rival).await.unwrap();
    assert_eq!(store.count_agencies().await.unwrap(), 2);
    assert_eq!(
        store.agency(&harbour.id).await.unwrap(),
        Some(harbour.clone())
    );
    assert_eq!(
        store.agency_by_slug(&rival.slug).await.unwrap(),
        Some(rival.clone())
    );
    assert_eq!(store.agency_by_slug("no-such-agency").await.unwrap(), None);
    let same_slug = Agency {
        id: AgencyId(tokens::random_id()),
        ..harbour.clone()
    };
    assert!(matches!(
        store.create_agency(&same_slug).await,
        Err(PortError::Conflict { .. })
    ));

    // Stored in NFC lower case; found by any case and either Unicode form of the address.
    let jane = account(
        &harbour,
        "J\u{00C5}NE.Doe@Example.COM",
        "Jåne Doe",
        Role::Owner,
    );
    store.create_staff(&jane).await.unwrap();
    assert_eq!(
        store.staff_by_id(&jane.id).await.unwrap(),
        Some(jane.clone())
    );
    for spelling in [
        "jåne.doe@example.com",
        "JA\u{030A}NE.DOE@EXAMPLE.COM",
        "  Jåne.Doe@example.com ",
    ] {
        let found = store.staff_by_email(&email(spelling)).await.unwrap();
        assert_eq!(
            found.as_ref().map(|a| &a.id),
            Some(&jane.id),
            "{spelling:?}"
        );
    }
    assert_eq!(
        store
            .staff_by_email(&email("jane.doe@example.com"))
            .await
            .unwrap(),
        None,
        "a look-alike without the ring is another address"
    );
    assert_eq!(
        store.staff_by_id(&StaffId("nobody".into())).await.unwrap(),
        None
    );

    // Email is unique across the whole service, whatever its case, in any agency.
    let twin = account(&rival, "jåne.DOE@example.com", "Jane Twin", Role::Staff);
    assert!(matches!(
        store.create_staff(&twin).await,
        Err(PortError::Conflict { .. })
    ));
    assert_eq!(store.staff_by_id(&twin.id).await.unwrap(), None);
}

async fn list_staff_filters_within_one_agency(store: &SqlStore) {
    let harbour = agency(&format!("harbour-{}", &tokens::random_id()[..6]));
    let rival = agency(&format!("rival-{}", &tokens::random_id()[..6]));
    store.create_agency(&harbour).await.unwrap();
    store.create_agency(&rival).await.unwrap();
    let olivia = account(
        &harbour,
        "olivia@harbour.example",
        "Olivia Owner",
        Role::Owner,
    );
    let cleo = account(
        &harbour,
        "cleo@harbour.example",
        "Cleo Admin",
        Role::ClientAdmin,
    );
    let bob = account(&harbour, "bob@harbour.example", "Bob Baker", Role::Staff);
    let mut dora = account(&harbour, "dora@harbour.example", "Dora Gone", Role::Staff);
    dora.status = StaffStatus::Disabled;
    let rival_bob = account(&rival, "bob@rival.example", "Bob Baker", Role::Staff);
    for a in [&olivia, &cleo, &bob, &dora, &rival_bob] {
        store.create_staff(a).await.unwrap();
    }
    let list = |query: Option<&str>, role: Option<Role>, status: Option<StaffStatus>| {
        let filter = StaffFilter {
            query: query.map(str::to_owned),
            role,
            status,
        };
        let agency = harbour.id.clone();
        async move { ids(&store.list_staff(&agency, &filter).await.unwrap()) }
    };

    // Everyone of the agency, ordered by name; never the other agency's Bob.
    assert_eq!(
        list(None, None, None).await,
        ids_of(&[&bob, &cleo, &dora, &olivia])
    );
    // `q` matches the name or the email, case-insensitively.
    assert_eq!(list(Some("BAKER"), None, None).await, ids_of(&[&bob]));
    assert_eq!(list(Some("bob"), None, None).await, ids_of(&[&bob]));
    assert_eq!(
        list(Some("Cleo@Harbour"), None, None).await,
        ids_of(&[&cleo])
    );
    assert_eq!(list(Some("rival"), None, None).await, Vec::<String>::new());
    assert_eq!(
        list(Some("o"), Some(Role::Owner), None).await,
        ids_of(&[&olivia])
    );
    assert_eq!(
        list(None, Some(Role::Staff), None).await,
        ids_of(&[&bob, &dora])
    );
    assert_eq!(
        list(None, None, Some(StaffStatus::Disabled)).await,
        ids_of(&[&dora])
    );
    assert_eq!(
        list(None, Some(Role::Staff), Some(StaffStatus::Active)).await,
        ids_of(&[&bob])
    );
    assert_eq!(
        list(Some("nobody-matches"), None, None).await,
        Vec::<String>::new()
    );
}

async fn set_password_bumps_the_version_and_kills_reset_tokens(store: &SqlStore) {
    let harbour = agency(&format!("harbour-{}", &tokens::random_id()[..6]));
    store.create_agency(&harbour).await.unwrap();
    let bob = account(&harbour, "bob@harbour.example", "Bob Baker", Role::Staff);
    store.create_staff(&bob).await.unwrap();
    let digest = tokens::digest("reset-token-1");
    store
        .replace_reset_token(&bob.id, &digest, 1_000, 2_800)
        .await
        .unwrap();
    assert_eq!(
        store
            .reset_token(&digest)
            .await
            .unwrap()
            .map(|r| r.account_id),
        Some(bob.id.clone())
    );

    let notify = mail("bob@harbour.example", "Your password was changed", None);
    store
        .set_password(
            &bob.id,
            &change(&harbour, "new-hash", 1_100, Some(notify.clone())),
        )
        .await
        .unwrap();
    let after = store.staff_by_id(&bob.id).await.unwrap().unwrap();
    assert_eq!(after.password_hash.as_deref(), Some("new-hash"));
    assert_eq!(after.password_version, bob.password_version + 1);
    assert_eq!(
        after.password_state,
        PasswordState::Temporary { expires_at: 4_700 }
    );
    assert_eq!(
        store.reset_token(&digest).await.unwrap(),
        None,
        "the link died"
    );
    assert!(
        !store
            .redeem_reset_token(&digest, 1_200, &bob.id, &change(&harbour, "x", 1_200, None))
            .await
            .unwrap()
    );
    // The audit record and the notification were written with it.
    let events = store.recent(&harbour.id, 10).await.unwrap();
    assert_eq!(
        events.iter().map(|e| e.event.as_str()).collect::<Vec<_>>(),
        ["admin_password_reset"]
    );
    let queued = store.claim_due(1_100, 10, 60).await.unwrap();
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].mail, notify);

    // The hash upgrade applies only over the hash it replaces.
    store
        .upgrade_hash(&bob.id, "stale-hash", "upgraded")
        .await
        .unwrap();
    assert_eq!(
        store
            .staff_by_id(&bob.id)
            .await
            .unwrap()
            .unwrap()
            .password_hash
            .as_deref(),
        Some("new-hash")
    );
    store
        .upgrade_hash(&bob.id, "new-hash", "upgraded")
        .await
        .unwrap();
    let upgraded = store.staff_by_id(&bob.id).await.unwrap().unwrap();
    assert_eq!(upgraded.password_hash.as_deref(), Some("upgraded"));
    assert_eq!(
        upgraded.password_version, after.password_version,
        "not a change"
    );
}

async fn reset_tokens_are_single_use_superseded_and_expire(store: &SqlStore) {
    let harbour = agency(&format!("harbour-{}", &tokens::random_id()[..6]));
    store.create_agency(&harbour).await.unwrap();
    let bob = account(&harbour, "bob@harbour.example", "Bob Baker", Role::Staff);
    let carol = account(
        &harbour,
        "carol@harbour.example",
        "Carol Clark",
        Role::Staff,
    );
    store.create_staff(&bob).await.unwrap();
    store.create_staff(&carol).await.unwrap();

    // A newer request supersedes the older link.
    let first = tokens::digest("first");
    let second = tokens::digest("second");
    store
        .replace_reset_token(&bob.id, &first, 1_000, 2_800)
        .await
        .unwrap();
    store
        .replace_reset_token(&bob.id, &second, 1_010, 2_810)
        .await
        .unwrap();
    assert_eq!(store.reset_token(&first).await.unwrap(), None);
    let record = store.reset_token(&second).await.unwrap().unwrap();
    assert_eq!(
        (record.account_id, record.expires_at),
        (bob.id.clone(), 2_810)
    );
    assert!(
        !store
            .redeem_reset_token(&first, 1_020, &bob.id, &change(&harbour, "h1", 1_020, None))
            .await
            .unwrap(),
        "a superseded link does not redeem"
    );
    // Redeeming needs the token's own account.
    assert!(
        !store
            .redeem_reset_token(
                &second,
                1_020,
                &carol.id,
                &change(&harbour, "h1", 1_020, None)
            )
            .await
            .unwrap()
    );
    // Expired at its expiry instant.
    assert!(
        !store
            .redeem_reset_token(
                &second,
                2_810,
                &bob.id,
                &change(&harbour, "h1", 2_810, None)
            )
            .await
            .unwrap()
    );
    assert_eq!(
        store.staff_by_id(&bob.id).await.unwrap().unwrap(),
        bob,
        "failed redemptions change nothing"
    );

    // Single use: of two concurrent redemptions exactly one wins, once.
    let (change_a, change_b) = (
        change(&harbour, "hash-a", 1_030, None),
        change(&harbour, "hash-b", 1_030, None),
    );
    let (a, b) = tokio::join!(
        store.redeem_reset_token(&second, 1_030, &bob.id, &change_a),
        store.redeem_reset_token(&second, 1_030, &bob.id, &change_b),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(a ^ b, "exactly one redemption wins: {a} {b}");
    let after = store.staff_by_id(&bob.id).await.unwrap().unwrap();
    assert_eq!(after.password_version, bob.password_version + 1);
    assert_eq!(
        after.password_hash.as_deref(),
        Some(if a { "hash-a" } else { "hash-b" })
    );
    assert!(
        !store
            .redeem_reset_token(
                &second,
                1_040,
                &bob.id,
                &change(&harbour, "h3", 1_040, None)
            )
            .await
            .unwrap(),
        "a used link does not redeem again"
    );
    assert_eq!(store.reset_token(&second).await.unwrap(), None);
    // Carol's account was never touched.
    assert_eq!(store.staff_by_id(&carol.id).await.unwrap().unwrap(), carol);
}

async fn instance_secrets_keep_the_first_writer(store: &SqlStore) {
    assert_eq!(
        store
            .instance_secret("csrf_hmac_key", "first")
            .await
            .unwrap(),
        "first"
    );
    assert_eq!(
        store
            .instance_secret("csrf_hmac_key", "second")
            .await
            .unwrap(),
        "first"
    );
    assert_eq!(
        store.instance_secret("other", "third").await.unwrap(),
        "third"
    );
}

async fn audit_log_is_per_agency_newest_first(store: &SqlStore) {
    let harbour = agency(&format!("harbour-{}", &tokens::random_id()[..6]));
    let rival = agency(&format!("rival-{}", &tokens::random_id()[..6]));
    store.create_agency(&harbour).await.unwrap();
    store.create_agency(&rival).await.unwrap();
    let mut detailed = audit(&harbour, "sign_in_failed", 1_000);
    detailed.actor = Some(StaffId("actor-1".into()));
    detailed.subject = Some(StaffId("subject-1".into()));
    detailed.detail = "method=password".into();
    store.record(&detailed).await.unwrap();
    store
        .record(&audit(&rival, "sign_in_succeeded", 1_001))
        .await
        .unwrap();
    store
        .record(&audit(&harbour, "password_changed", 1_002))
        .await
        .unwrap();
    store
        .record(&audit(&harbour, "sign_in_succeeded", 1_003))
        .await
        .unwrap();

    let events = store.recent(&harbour.id, 10).await.unwrap();
    assert_eq!(
        events.iter().map(|e| e.event.as_str()).collect::<Vec<_>>(),
        ["sign_in_succeeded", "password_changed", "sign_in_failed"]
    );
    let oldest = &events[2];
    assert_eq!(oldest.at, 1_000);
    assert_eq!(oldest.actor.as_deref(), Some("actor-1"));
    assert_eq!(oldest.subject.as_deref(), Some("subject-1"));
    assert_eq!(oldest.ip, "192.0.2.1");
    assert_eq!(oldest.detail, "method=password");
    assert_eq!(store.recent(&harbour.id, 2).await.unwrap().len(), 2);
    assert_eq!(store.recent(&rival.id, 10).await.unwrap().len(), 1);
}

async fn mail_queue_leases_retries_and_drops_expired_mail(store: &SqlStore) {
    let plain = mail("a@x.example", "plain", None);
    let link = mail("b@x.example", "reset link", Some(1_500));
    let notice = mail("c@x.example", "notice", None);
    for m in [&plain, &link, &notice] {
        store.enqueue(m, 1_000).await.unwrap();
    }
    assert!(
        store.claim_due(999, 10, 60).await.unwrap().is_empty(),
        "not due yet"
    );

    let claimed = store.claim_due(1_000, 10, 60).await.unwrap();
    assert_eq!(claimed.len(), 3);
    let by_subject = |subject: &str| {
        claimed
            .iter()
            .find(|q| q.mail.subject == subject)
            .unwrap_or_else(|| panic!("{subject} not claimed"))
            .clone()
    };
    let (plain_q, link_q, notice_q) = (
        by_subject("plain"),
        by_subject("reset link"),
        by_subject("notice"),
    );
    assert_eq!(plain_q.mail, plain);
    assert_eq!(link_q.mail, link);
    assert!(claimed.iter().all(|q| q.attempts == 0));

    // Leased: a second claim gets nothing until the lease runs out.
    assert!(store.claim_due(1_000, 10, 60).await.unwrap().is_empty());
    assert!(store.claim_due(1_059, 10, 60).await.unwrap().is_empty());

    store.mark_sent(&notice_q.id, 1_001).await.unwrap();
    store
        .mark_failed(&plain_q.id, 2_000, "connection refused")
        .await
        .unwrap();
    // At the lease's end only the still-leased link mail is due again: the sent one never,
    // the failed one at its retry time.
    let again = store.claim_due(1_060, 10, 60).await.unwrap();
    assert_eq!(
        again.iter().map(|q| q.id.as_str()).collect::<Vec<_>>(),
        [link_q.id.as_str()]
    );

    // Mail whose content expired is dropped, not sent late.
    assert_eq!(store.drop_expired(1_499).await.unwrap(), 0);
    assert_eq!(store.drop_expired(1_500).await.unwrap(), 1);
    assert_eq!(store.drop_expired(1_500).await.unwrap(), 0);

    assert!(store.claim_due(1_999, 10, 60).await.unwrap().is_empty());
    let retried = store.claim_due(2_000, 10, 60).await.unwrap();
    assert_eq!(retried.len(), 1);
    assert_eq!(retried[0].id, plain_q.id);
    assert_eq!(retried[0].attempts, 1, "the failure was counted");
    assert_eq!(retried[0].mail, plain);
    store.mark_sent(&plain_q.id, 2_001).await.unwrap();
    assert!(
        store.claim_due(1_000_000, 10, 60).await.unwrap().is_empty(),
        "sent mail is never claimed again"
    );

    // `limit` caps a batch, and concurrent claims never hand out the same mail twice.
    for n in 0..6 {
        store
            .enqueue(&mail("d@x.example", &format!("batch {n}"), None), 3_000)
            .await
            .unwrap();
    }
    assert_eq!(store.claim_due(3_000, 2, 60).await.unwrap().len(), 2);
    let (left, right) = tokio::join!(
        store.claim_due(3_000, 10, 60),
        store.claim_due(3_000, 10, 60)
    );
    let (left, right) = (left.unwrap(), right.unwrap());
    let all: Vec<_> = left.iter().chain(&right).map(|q| q.id.clone()).collect();
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!(all.len(), 4, "the other four, once: {all:?}");
    assert_eq!(unique.len(), 4);
}

async fn sql_contract(db: Db) {
    let (store, _dir) = fresh_sql_store(db).await;
    agencies_and_staff_round_trip(&store).await;
    list_staff_filters_within_one_agency(&store).await;
    instance_secrets_keep_the_first_writer(&store).await;
    audit_log_is_per_agency_newest_first(&store).await;
    store.close().await;

    // These read the outbox and the audit log from empty, so each gets its own database.
    let (store, _dir) = fresh_sql_store(db).await;
    set_password_bumps_the_version_and_kills_reset_tokens(&store).await;
    store.close().await;
    let (store, _dir) = fresh_sql_store(db).await;
    reset_tokens_are_single_use_superseded_and_expire(&store).await;
    store.close().await;
    let (store, _dir) = fresh_sql_store(db).await;
    mail_queue_leases_retries_and_drops_expired_mail(&store).await;
    store.close().await;
}

#[tokio::test]
async fn directory_audit_and_mail_queue_contract_holds_on_sqlite() {
    sql_contract(Db::Sqlite).await;
}

#[tokio::test]
async fn directory_audit_and_mail_queue_contract_holds_on_postgres() {
    sql_contract(Db::Postgres).await;
}

// ------------------------------------------------------------------ session adapters

fn session(account: &str, csrf: &str) -> SessionRecord {
    SessionRecord {
        account_id: account.to_owned(),
        agency_id: "agency-1".into(),
        kind: SessionKind::Full,
        method: AuthMethod::Password,
        created_at: 1_000,
        last_seen_at: 1_000,
        absolute_expires_at: 1_000 + 43_200,
        csrf_token: csrf.to_owned(),
        user_agent: "test-agent".into(),
        ip: "192.0.2.1".into(),
        resume_to: None,
    }
}

fn keys(mut listed: Vec<(String, SessionRecord)>) -> Vec<String> {
    listed.sort_by(|a, b| a.0.cmp(&b.0));
    listed.into_iter().map(|(k, _)| k).collect()
}

async fn session_store_contract(store: &dyn SessionStore) {
    store.ping().await.unwrap();
    // Unique per run, so a shared Redis holds nothing of another test under these names.
    let run = &tokens::random_id()[..8];
    let alice = StaffId(format!("alice-{run}"));
    let bob = StaffId(format!("bob-{run}"));
    let key = |n: u8| format!("{n}-{run}");

    let first = session(&alice.0, "csrf-1");
    store.insert(&key(1), &first, 600).await.unwrap();
    assert_eq!(store.get(&key(1)).await.unwrap(), Some(first.clone()));
    assert_eq!(store.get(&key(9)).await.unwrap(), None);

    let mut touched = first.clone();
    touched.last_seen_at = 1_100;
    touched.resume_to = Some("/settings/staff".into());
    store.update(&key(1), &touched, 600).await.unwrap();
    assert_eq!(store.get(&key(1)).await.unwrap(), Some(touched.clone()));

    // Update is "set if it exists": a removed session stays removed.
    store.remove(&key(1), &alice).await.unwrap();
    assert_eq!(store.get(&key(1)).await.unwrap(), None);
    store.update(&key(1), &touched, 600).await.unwrap();
    assert_eq!(store.get(&key(1)).await.unwrap(), None, "not resurrected");
    assert!(store.list_for_account(&alice).await.unwrap().is_empty());

    store
        .insert(&key(2), &session(&alice.0, "csrf-2"), 600)
        .await
        .unwrap();
    store
        .insert(&key(3), &session(&alice.0, "csrf-3"), 600)
        .await
        .unwrap();
    store
        .insert(&key(4), &session(&bob.0, "csrf-4"), 600)
        .await
        .unwrap();
    let listed = store.list_for_account(&alice).await.unwrap();
    assert_eq!(keys(listed.clone()), [key(2), key(3)]);
    let csrf_of_3 = listed
        .iter()
        .find(|(k, _)| *k == key(3))
        .map(|(_, r)| r.csrf_token.clone());
    assert_eq!(csrf_of_3.as_deref(), Some("csrf-3"));
    assert_eq!(keys(store.list_for_account(&bob).await.unwrap()), [key(4)]);

    // Ending all sessions of an account but one: the others are gone, other accounts stay.
    assert_eq!(
        store
            .remove_all_for_account(&alice, Some(&key(3)))
            .await
            .unwrap(),
        1
    );
    assert_eq!(store.get(&key(2)).await.unwrap(), None);
    assert!(store.get(&key(3)).await.unwrap().is_some());
    assert_eq!(
        keys(store.list_for_account(&alice).await.unwrap()),
        [key(3)]
    );
    assert_eq!(store.remove_all_for_account(&alice, None).await.unwrap(), 1);
    assert_eq!(store.get(&key(3)).await.unwrap(), None);
    assert!(store.list_for_account(&alice).await.unwrap().is_empty());
    assert_eq!(store.remove_all_for_account(&alice, None).await.unwrap(), 0);
    assert!(
        store.get(&key(4)).await.unwrap().is_some(),
        "Bob's session stays"
    );
    assert_eq!(store.remove_all_for_account(&bob, None).await.unwrap(), 1);
}

async fn counters_contract(counters: &dyn Counters) {
    let run = &tokens::random_id()[..8];
    let failures = format!("fail:acct:{run}");
    let other = format!("fail:acct:other-{run}");
    let hits = format!("reset:ip:{run}");

    assert_eq!(
        counters.failures(&failures).await.unwrap(),
        FailureCount::default()
    );
    assert_eq!(
        counters.add_failure(&failures, 100, 3_600).await.unwrap(),
        FailureCount {
            count: 1,
            last_at: 100
        }
    );
    assert_eq!(
        counters.add_failure(&failures, 105, 3_600).await.unwrap(),
        FailureCount {
            count: 2,
            last_at: 105
        }
    );
    assert_eq!(
        counters.failures(&failures).await.unwrap(),
        FailureCount {
            count: 2,
            last_at: 105
        }
    );
    assert_eq!(
        counters.failures(&other).await.unwrap(),
        FailureCount::default()
    );
    counters.clear(&failures).await.unwrap();
    assert_eq!(
        counters.failures(&failures).await.unwrap(),
        FailureCount::default()
    );

    assert_eq!(counters.count(&hits).await.unwrap(), 0);
    assert_eq!(counters.hit(&hits, 3_600).await.unwrap(), 1);
    assert_eq!(counters.hit(&hits, 3_600).await.unwrap(), 2);
    assert_eq!(counters.hit(&hits, 3_600).await.unwrap(), 3);
    assert_eq!(counters.count(&hits).await.unwrap(), 3);
    assert_eq!(counters.count(&format!("{hits}-other")).await.unwrap(), 0);
    counters.clear(&hits).await.unwrap();
    assert_eq!(counters.count(&hits).await.unwrap(), 0);
}

fn redis_store() -> RedisStore {
    let prefix = format!("lk-contract-{}:", &tokens::random_id()[..12]);
    RedisStore::new(&required_env("LATCHKEY_TEST_REDIS_URL"), &prefix, 43_200).expect("redis")
}

#[tokio::test]
async fn session_store_and_counters_contract_holds_on_redis() {
    let redis = redis_store();
    session_store_contract(&redis).await;
    counters_contract(&redis).await;
}

#[tokio::test]
async fn session_store_and_counters_contract_holds_in_memory() {
    let memory = MemoryStore::new();
    session_store_contract(&memory).await;
    counters_contract(&memory).await;
}

// ------------------------------------------------------------------ P4

/// P4: raising the argon2 parameters upgrades a stored hash at the next sign-in.
#[tokio::test]
async fn p4_a_hash_made_with_old_parameters_is_upgraded_at_the_next_sign_in() {
    let old = spawn_app_on(Db::Postgres).await;
    let agency = old.agency("Harbour Homes", false).await;
    let bob = old.person(&agency, "Bob Baker", Role::Staff).await;
    let before = bob.account.password_hash.clone().expect("hash");
    assert!(
        before.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"),
        "{before}"
    );

    let raised = spawn_app_with(TestOptions {
        database_url: Some(old.database_url.clone()),
        env: vec![("LATCHKEY_PASSWORD_ARGON2_MEMORY_KIB".into(), "2048".into())],
        ..TestOptions::default()
    })
    .await;
    let browser = raised.signed_in(&bob).await;
    assert_status(&browser.get("/account").await, StatusCode::OK);
    let after = raised.account(&bob).await;
    let upgraded = after.password_hash.clone().expect("hash");
    assert!(
        upgraded.starts_with("$argon2id$v=19$m=2048,t=1,p=1$"),
        "{upgraded}"
    );
    assert_eq!(
        after.password_version, bob.account.password_version,
        "an upgrade is not a password change"
    );
    // The same password signs in with the new hash, and it is not rehashed again.
    raised.signed_in(&bob).await;
    assert_eq!(raised.account(&bob).await.password_hash, Some(upgraded));
    raised.stop().await;
    old.stop().await;
}
