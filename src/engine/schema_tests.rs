//! The schema against RESP as Redis sees it: keys, script arguments, decoded
//! answers and pushes.

use super::*;
use crate::proto::resp::parse;

fn schema() -> Schema {
    Schema::new("n1", 4, 1000)
}

fn bulk(s: &str) -> Value {
    Value::Bulk(s.as_bytes().to_vec())
}

#[test]
fn keys_and_channels_keep_the_topic_in_a_hash_tag() {
    assert_eq!(topic_key("a:b", "seq"), "wsgate:t:{a:b}:seq");
    assert_eq!(channel("a.b"), "wsgate:c:{a.b}");
    assert_eq!(topic_of_channel(b"wsgate:c:{a.b}"), Some("a.b"));
    assert_eq!(topic_of_channel(b"other:{a}"), None);
}

#[test]
fn a_publish_is_one_evalsha_with_the_floor_and_history_size() {
    let s = schema();
    let mut out = Vec::new();
    let op = EngineOp::Publish {
        topic: "t".into(),
        payload: b"hi there".as_slice().into(),
        binary: false,
        floor: 7,
    };
    assert_eq!(s.encode(&op, &mut out), Expect::Published);
    let (v, n) = parse(&out).unwrap().unwrap();
    assert_eq!(n, out.len());
    let Value::Array(args) = v else { panic!() };
    let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes().unwrap()).collect();
    assert_eq!(args[0], b"EVALSHA");
    assert_eq!(args[1], s.scripts.publish.sha.as_bytes());
    assert_eq!(
        &args[2..],
        [
            &b"3"[..],
            b"wsgate:t:{t}:seq",
            b"wsgate:t:{t}:h",
            b"wsgate:t:{t}:m",
            b"wsgate:c:{t}",
            b"7",
            b"4",
            b"thi there",
            b"60000"
        ]
    );
}

fn args_of(out: &[u8]) -> Vec<Vec<u8>> {
    let (Value::Array(args), _) = parse(out).unwrap().unwrap() else {
        panic!()
    };
    args.iter()
        .map(|a| a.as_bytes().unwrap().to_vec())
        .collect()
}

#[test]
fn a_save_keeps_the_peer_id_and_presence_names_only_peers() {
    let s = schema();
    let (session, peer) = (SessionId::random(), PeerId::random());
    let mut out = Vec::new();
    let save = EngineOp::Save {
        session,
        peer,
        user: Some("alice@example.com".into()),
        subs: vec![("t".into(), 3)],
        ttl_ms: 500,
    };
    s.encode(&save, &mut out);
    let args = args_of(&out);
    assert_eq!(args[3], [&b"wsgate:s:"[..], &session.to_text()].concat());
    assert_eq!(
        &args[5..],
        [
            b"500".to_vec(),
            peer.to_text().to_vec(),
            b"alice@example.com".to_vec(),
            b"t".to_vec(),
            b"3".to_vec()
        ]
    );
    for joined in [true, false] {
        let mut out = Vec::new();
        let topic: Arc<str> = "t".into();
        let member = Member::new(peer, Some("bob".into()));
        let op = if joined {
            EngineOp::Join { topic, member }
        } else {
            EngineOp::Leave { topic, member }
        };
        s.encode(&op, &mut out);
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains(&format!("{peer}:bob")), "{text}");
        assert!(!text.contains(&session.to_string()), "{text}");
    }
}

#[test]
fn a_sync_subscribes_before_it_reads() {
    let mut out = Vec::new();
    let op = EngineOp::Sync {
        topic: "t".into(),
        floor: 0,
    };
    schema().encode(&op, &mut out);
    let (first, n) = parse(&out).unwrap().unwrap();
    let Value::Array(sub) = first else { panic!() };
    assert_eq!(sub[0], bulk("SUBSCRIBE"));
    let (Value::Array(load), _) = parse(&out[n..]).unwrap().unwrap() else {
        panic!()
    };
    assert_eq!(load[0], bulk("EVALSHA"));
}

#[test]
fn decodes_claims_history_and_pushes() {
    let s = schema();
    let claim = Value::Array(vec![
        Value::Bulk(s.instance.as_bytes().to_vec()),
        Value::Array(vec![
            bulk("owner"),
            Value::Bulk(s.instance.as_bytes().to_vec()),
            bulk("peer"),
            bulk("00000000000000ab"),
            bulk("t:news"),
            bulk("12"),
        ]),
    ]);
    let EngineReply::Claimed(Some(c)) = s.decode(Expect::Claim, claim) else {
        panic!()
    };
    assert!(c.mine);
    assert_eq!(c.subs, vec![(Arc::from("news"), 12)]);
    assert_eq!(
        c.peer.map(|p| p.to_string()),
        Some("00000000000000ab".into())
    );
    assert!(matches!(
        s.decode(Expect::Claim, Value::Null),
        EngineReply::Claimed(None)
    ));
    let synced = Value::Array(vec![
        bulk("9"),
        Value::Array(vec![bulk("8 ta b"), bulk("9 b\x00\x01")]),
    ]);
    let EngineReply::Synced { seq, history } = s.decode(Expect::Synced, synced) else {
        panic!()
    };
    assert_eq!(seq, 9);
    assert_eq!(
        (history[0].seq, &history[0].payload[..], history[0].binary),
        (8, &b"a b"[..], false)
    );
    assert_eq!(
        (history[1].seq, &history[1].payload[..], history[1].binary),
        (9, &b"\x00\x01"[..], true)
    );
    assert!(matches!(
        s.decode(Expect::Owned, Value::Error("NOSCRIPT".into())),
        EngineReply::Failed
    ));
    let id = PeerId::random();
    let push = [
        bulk("message"),
        bulk("wsgate:c:{x}"),
        bulk(&format!("j{id}")),
    ];
    let Some((
        "x",
        EngineEvent::Presence {
            joined: true,
            member,
        },
    )) = decode_push(&push)
    else {
        panic!()
    };
    assert_eq!(member, Member::new(id, None));
    let named = [
        bulk("message"),
        bulk("wsgate:c:{x}"),
        bulk(&format!("l{id}:alice")),
    ];
    let Some((
        "x",
        EngineEvent::Presence {
            joined: false,
            member,
        },
    )) = decode_push(&named)
    else {
        panic!()
    };
    assert_eq!(member, Member::new(id, Some("alice".into())));
    // A session id on the channel is not a peer id.
    let leaked = [
        bulk("message"),
        bulk("wsgate:c:{x}"),
        bulk(&format!("j{}", SessionId::random())),
    ];
    assert!(decode_push(&leaked).is_none());
    let msg = [bulk("message"), bulk("wsgate:c:{x}"), bulk("m3 tpayload")];
    let Some(("x", EngineEvent::Message(m))) = decode_push(&msg) else {
        panic!()
    };
    assert_eq!((m.seq, &m.payload[..]), (3, &b"payload"[..]));
    assert!(decode_push(&[bulk("subscribe"), bulk("wsgate:c:{x}"), Value::Int(1)]).is_none());
}
