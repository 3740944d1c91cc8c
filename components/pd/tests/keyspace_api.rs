//! `keyspacepb.Keyspace` over gRPC: watching, state changes as upstream
//! allows them, paging, and errors in the response header.

mod common;

use std::time::Duration;

use common::{opts, Sim};
use tikal_proto::keyspacepb::{self, keyspace_client::KeyspaceClient, KeyspaceState};
use tikal_proto::pdpb;

async fn serve(sim: &Sim) -> KeyspaceClient<tonic::transport::Channel> {
    KeyspaceClient::new(common::serve(sim).await)
}

async fn next(
    w: &mut tonic::Streaming<keyspacepb::WatchKeyspacesResponse>,
) -> keyspacepb::WatchKeyspacesResponse {
    tokio::time::timeout(Duration::from_secs(10), w.message())
        .await
        .expect("a watch answer within 10s")
        .unwrap()
        .unwrap()
}

fn error_type(header: &Option<pdpb::ResponseHeader>) -> Option<pdpb::ErrorType> {
    let e = header.as_ref()?.error.as_ref()?;
    pdpb::ErrorType::try_from(e.r#type).ok()
}

#[tokio::test]
async fn watchers_see_every_keyspace_then_each_change() {
    let sim = Sim::new(&[1], &[1], opts(1));
    let mut ks = serve(&sim).await;
    let mut watch = ks
        .watch_keyspaces(keyspacepb::WatchKeyspacesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let first = next(&mut watch).await;
    let names: Vec<&str> = first.keyspaces.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["DEFAULT"]);

    let cluster = &sim.cluster;
    let created = cluster
        .keyspaces
        .create(&cluster.meta, "tenant", Default::default(), 5)
        .unwrap();
    let seen = next(&mut watch).await;
    assert_eq!(seen.keyspaces, vec![created.clone()]);

    let update = |id: u32, state: i32| keyspacepb::UpdateKeyspaceStateRequest {
        header: None,
        id,
        state,
    };
    let archived = ks
        .update_keyspace_state(update(created.id, KeyspaceState::Archived as i32))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(error_type(&archived.header), None);
    let meta = archived.keyspace.unwrap();
    assert_eq!(meta.state, KeyspaceState::Archived as i32);
    assert_eq!(next(&mut watch).await.keyspaces, vec![meta]);

    // Moves upstream refuses, in the header; nothing changes.
    for (id, state, kind) in [
        (
            created.id,
            KeyspaceState::Enabled as i32,
            pdpb::ErrorType::InvalidValue,
        ),
        (
            0,
            KeyspaceState::Disabled as i32,
            pdpb::ErrorType::InvalidValue,
        ),
        (
            77,
            KeyspaceState::Enabled as i32,
            pdpb::ErrorType::EntryNotFound,
        ),
        (created.id, 42, pdpb::ErrorType::InvalidValue),
    ] {
        let r = ks
            .update_keyspace_state(update(id, state))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(error_type(&r.header), Some(kind), "{id} -> {state}");
        assert!(r.keyspace.is_none());
    }

    let page = ks
        .get_all_keyspaces(keyspacepb::GetAllKeyspacesRequest {
            header: None,
            start_id: 1,
            limit: 1,
        })
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<u32> = page.keyspaces.iter().map(|m| m.id).collect();
    assert_eq!(ids, [created.id]);

    let missing = ks
        .load_keyspace(keyspacepb::LoadKeyspaceRequest {
            header: None,
            name: "nobody".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        error_type(&missing.header),
        Some(pdpb::ErrorType::EntryNotFound)
    );
    assert!(missing.keyspace.is_none());
    let found = ks
        .load_keyspace(keyspacepb::LoadKeyspaceRequest {
            header: None,
            name: "tenant".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.keyspace.unwrap().id, created.id);
}
