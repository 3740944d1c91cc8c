//! PD's gRPC face over a scenario from `common`: operators reach the
//! leader on its own region-heartbeat stream, and stores report their
//! states as upstream encodes them.

mod common;

use std::time::Duration;

use common::{opts, Sim};
use tikal_proto::eraftpb::ConfChangeType;
use tikal_proto::metapb;
use tikal_proto::pdpb::{self, pd_client::PdClient};
use tokio_stream::wrappers::ReceiverStream;

async fn serve(sim: &Sim) -> PdClient<tonic::transport::Channel> {
    PdClient::new(common::serve(sim).await)
}

async fn get_store(pd: &mut PdClient<tonic::transport::Channel>, id: u64) -> metapb::Store {
    let req = pdpb::GetStoreRequest {
        header: None,
        store_id: id,
    };
    pd.get_store(req).await.unwrap().into_inner().store.unwrap()
}

#[tokio::test]
async fn the_leader_gets_the_next_step_on_its_heartbeat_stream() {
    let sim = Sim::new(&[1, 2], &[1], opts(3));
    let mut pd = serve(&sim).await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut answers = pd
        .region_heartbeat(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    tx.send(sim.request()).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(10), answers.message())
        .await
        .expect("an answer within 10s")
        .unwrap()
        .unwrap();
    assert_eq!(answer.region_id, 1);
    assert_eq!(answer.target_peer.as_ref(), sim.peer_on(1));
    let change = &answer.change_peer_v2.unwrap().changes[0];
    assert_eq!(change.change_type, ConfChangeType::AddLearnerNode as i32);
    assert_eq!(change.peer.as_ref().unwrap().store_id, 2);
}

#[tokio::test]
async fn stores_report_state_and_node_state_as_upstream() {
    let sim = Sim::new(&[1, 2, 3, 4], &[1, 2, 3], opts(3));
    let mut pd = serve(&sim).await;
    sim.cluster.remove_store(4, false).unwrap();
    let states = |s: &metapb::Store| (s.state, s.node_state);
    let offline = (
        metapb::StoreState::Offline as i32,
        metapb::NodeState::Removing as i32,
    );
    assert_eq!(states(&get_store(&mut pd, 4).await), offline);

    sim.store_heartbeats();
    let four = get_store(&mut pd, 4).await;
    let tombstone = (
        metapb::StoreState::Tombstone as i32,
        metapb::NodeState::Removed as i32,
    );
    assert_eq!(states(&four), tombstone);
    let up = (
        metapb::StoreState::Up as i32,
        metapb::NodeState::Serving as i32,
    );
    assert_eq!(states(&get_store(&mut pd, 1).await), up);

    let all = |exclude_tombstone_stores| pdpb::GetAllStoresRequest {
        header: None,
        exclude_tombstone_stores,
    };
    let live = pd.get_all_stores(all(true)).await.unwrap().into_inner();
    assert_eq!(live.stores.len(), 3);
    let every = pd.get_all_stores(all(false)).await.unwrap().into_inner();
    assert_eq!(every.stores.len(), 4);

    let refused = pd
        .put_store(pdpb::PutStoreRequest {
            header: None,
            store: Some(four),
        })
        .await
        .unwrap()
        .into_inner();
    let err = refused.header.unwrap().error.unwrap();
    assert_eq!(err.r#type, pdpb::ErrorType::StoreTombstone as i32);
}

/// A store's `AskBatchSplit` for one new region: the new region's id, or
/// the error in the answer's header.
async fn ask_split(
    pd: &mut PdClient<tonic::transport::Channel>,
    region: &metapb::Region,
) -> Result<u64, String> {
    let req = pdpb::AskBatchSplitRequest {
        header: None,
        region: Some(region.clone()),
        split_count: 1,
    };
    let resp = pd.ask_batch_split(req).await.unwrap().into_inner();
    match resp.header.and_then(|h| h.error) {
        Some(e) => Err(e.message),
        None => Ok(resp.ids[0].new_region_id),
    }
}

#[tokio::test]
async fn split_requests_are_refused_while_scheduling_is_halted_or_store_splits_are_off() {
    let sim = Sim::new(&[1], &[1], opts(3));
    let mut pd = serve(&sim).await;
    let region = sim.request().region.unwrap();
    assert!(ask_split(&mut pd, &region).await.is_ok());
    let set = |key: &str, value: &str| {
        let change = serde_json::Map::from_iter([(key.to_string(), value.into())]);
        sim.cluster.update_opts(&change).unwrap();
    };
    set("enable-tikv-split-region", "false");
    let err = ask_split(&mut pd, &region).await.unwrap_err();
    assert!(err.contains("split region is disabled"), "{err}");
    set("enable-tikv-split-region", "true");
    set("halt-scheduling", "true");
    let err = ask_split(&mut pd, &region).await.unwrap_err();
    assert!(err.contains("scheduling is halted"), "{err}");
    set("halt-scheduling", "false");
    assert!(ask_split(&mut pd, &region).await.is_ok());
}
