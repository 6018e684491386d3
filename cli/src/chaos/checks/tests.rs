//! The checks themselves, against a server that disagrees with the ledger.

use super::*;
use crate::bench::LocalServer;
use crate::chaos::ledger::{self, Event};
use rand::SeedableRng;

fn event(n: usize) -> Event {
    let tag = format!("c0w0n{n}");
    Event {
        cycle: 0,
        actor: ledger::worker_actor(0, 0),
        text: ledger::event_text(&tag, n),
        tag,
        token: None,
        id: None,
        written: Written::Acked,
        deleted: Deleted::No,
        disposable: false,
    }
}

/// The checks report what the ledger and memd disagree on, and only that: a lost
/// acknowledged event, a deleted one that is back, a duplicate, an event nobody wrote.
#[tokio::test]
async fn the_checks_report_each_kind_of_disagreement() {
    let server = LocalServer::start_with(|config| config.embedding_model = "off".into())
        .await
        .unwrap();
    let client = MemdClient::connect(server.endpoint.clone(), None)
        .await
        .unwrap();
    let memory_id = client
        .create_memory(pb::CreateMemoryRequest {
            name: "checked".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .memory_id;
    let mut ledger = Ledger::default();
    for n in 0..5 {
        let mut entry = event(n);
        let stored = client
            .create_event(workload::event_request(&memory_id, &entry))
            .await
            .unwrap();
        entry.id = Some(stored.event_id);
        ledger.events.push(entry);
    }
    // 0 and 1 are as the ledger says. 2 is lost behind the ledger's back; 3 is "deleted"
    // but still there; 4 is stored twice; and one event nobody noted.
    let delete = |e: &Event| pb::DeleteEventRequest {
        memory_id: memory_id.clone(),
        actor_id: e.actor.clone(),
        session_id: SESSION.into(),
        event_id: e.id.clone().unwrap(),
    };
    client
        .delete_event(delete(&ledger.events[2]))
        .await
        .unwrap();
    ledger.events[3].deleted = Deleted::Yes { cycle: 0 };
    let again = workload::event_request(&memory_id, &ledger.events[4]);
    client.create_event(again).await.unwrap();
    let stranger = event(9);
    client
        .create_event(workload::event_request(&memory_id, &stranger))
        .await
        .unwrap();

    let ledger = Mutex::new(ledger);
    let mut check = Check::new(&client, &memory_id, &ledger, 1, false);
    check.events_of(0).await;
    check.earlier(1, &mut StdRng::seed_from_u64(1)).await;
    let violations = check.violations.join("\n");
    assert!(
        violations.contains("acknowledged event c0w0n2"),
        "{violations}"
    );
    assert!(
        violations.contains("deleted event c0w0n3 is back"),
        "{violations}"
    );
    assert!(
        violations.contains("event c0w0n4 is stored 2 times"),
        "{violations}"
    );
    assert!(violations.contains("nobody wrote"), "{violations}");
    assert!(
        !violations.contains("c0w0n0") && !violations.contains("c0w0n1"),
        "{violations}"
    );
    server.stop().await;
}
