use tikal_engine::KvEngine;
#[test]
fn inspect() {
    let dir = std::env::var("DIR").unwrap();
    let key = tikal_codec::mvcc_key::encode_key(std::env::var("KEY").unwrap().as_bytes());
    let dec = |k: &[u8]| {
        String::from_utf8_lossy(
            &tikal_codec::mvcc_key::decode_key(k)
                .map(|x| x.0)
                .unwrap_or(k.to_vec()),
        )
        .to_string()
    };
    for i in 0..4 {
        let kv = KvEngine::open(&std::path::Path::new(&dir).join(format!("tikv-{i}/db"))).unwrap();
        let id = tikal_raftstore::load_store_ident(&kv)
            .unwrap()
            .unwrap()
            .store_id;
        for r in tikal_raftstore::load_regions(&kv).unwrap() {
            if r.start_key <= key && (r.end_key.is_empty() || key < r.end_key) {
                println!(
                    "store {id} (index {i}): region {} [{}, {}) {:?} peers {:?} applied {}",
                    r.id,
                    dec(&r.start_key),
                    dec(&r.end_key),
                    r.region_epoch,
                    r.peers
                        .iter()
                        .map(|p| (p.id, p.store_id))
                        .collect::<Vec<_>>(),
                    tikal_raftstore::applied_index(&kv, r.id).unwrap()
                );
            }
        }
    }
}
