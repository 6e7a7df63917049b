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
        direct: 4,
        ttl_ms: 500,
    };
    s.encode(&save, &mut out);
    let args = args_of(&out);
    let key = [&b"wsgate:s:"[..], &session.to_text()].concat();
    assert_eq!(args[2], b"3");
    assert_eq!(args[3], key);
    // Its direct messages' keys beside it, so a script touches all three.
    assert_eq!(args[4], [&key[..], b":ds"].concat());
    assert_eq!(args[5], [&key[..], b":dh"].concat());
    assert_eq!(
        &args[7..],
        [
            b"500".to_vec(),
            peer.to_text().to_vec(),
            b"alice@example.com".to_vec(),
            b"4".to_vec(),
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

#[test]
fn direct_messages_travel_as_routes_keeps_and_answers() {
    let s = schema();
    let session = SessionId::random();
    let mut out = Vec::new();
    let route = EngineOp::Route {
        target: DirectTarget::Session(session),
        payload: b"a b".as_slice().into(),
        binary: false,
        core: 1,
        request: 42,
    };
    assert_eq!(s.encode(&route, &mut out), Expect::Routed);
    let args = args_of(&out);
    assert_eq!(args[1], s.scripts.route.sha.as_bytes());
    let msg = args[4].clone();
    // What the owner's node gets on its channel.
    let push = [bulk("message"), bulk("wsgate:n:n2/x"), Value::Bulk(msg)];
    let Some(DirectPush::Request {
        origin,
        core: 1,
        request: 42,
        target: DirectTarget::Session(got),
        payload,
        binary: false,
    }) = decode_direct_push(&push)
    else {
        panic!("{push:?}")
    };
    assert_eq!(
        (&*origin, got, &payload[..]),
        (&*s.instance, session, &b"a b"[..])
    );
    // A user's goes to every node.
    let mut out = Vec::new();
    let user = EngineOp::Route {
        target: DirectTarget::User("u@x".into()),
        payload: b"\x00\x01".as_slice().into(),
        binary: true,
        core: 0,
        request: 7,
    };
    s.encode(&user, &mut out);
    let args = args_of(&out);
    assert_eq!(
        (&args[0][..], &args[1][..]),
        (&b"PUBLISH"[..], USER_CHANNEL.as_bytes())
    );
    let push = [
        bulk("message"),
        bulk(USER_CHANNEL),
        Value::Bulk(args[2].clone()),
    ];
    let Some(DirectPush::Request {
        target: DirectTarget::User(u),
        binary: true,
        payload,
        ..
    }) = decode_direct_push(&push)
    else {
        panic!()
    };
    assert_eq!((&*u, &payload[..]), ("u@x", &b"\x00\x01"[..]));
    // The answer comes back on the asking process's channel.
    let mut out = Vec::new();
    let answer = EngineOp::Answer {
        origin: "n1/abc".into(),
        core: 1,
        request: 42,
        count: DirectCount {
            delivered: 2,
            held: 1,
        },
    };
    s.encode(&answer, &mut out);
    let args = args_of(&out);
    assert_eq!(args[1], b"wsgate:n:n1/abc");
    let push = [
        bulk("message"),
        bulk("wsgate:n:n1/abc"),
        Value::Bulk(args[2].clone()),
    ];
    assert_eq!(
        decode_direct_push(&push),
        Some(DirectPush::Answer {
            core: 1,
            request: 42,
            count: DirectCount {
                delivered: 2,
                held: 1
            }
        })
    );
    // Malformed or foreign pushes are nothing.
    for bad in [
        "dn1 1.2 sNOTANID tx",
        "dn1 1.2 u!bad tx",
        "dn1 x.2 u a tx",
        "a1.2 x 0",
        "zzz",
    ] {
        let push = [bulk("message"), bulk(USER_CHANNEL), bulk(bad)];
        assert!(decode_direct_push(&push).is_none(), "{bad}");
    }
    let topic = [bulk("message"), bulk("wsgate:c:{x}"), bulk("a1.2 1 0")];
    assert!(decode_direct_push(&topic).is_none());
    // A claim carries the session's direct messages.
    let claim = Value::Array(vec![
        bulk("other/1"),
        Value::Array(vec![bulk("owner"), bulk("other/1"), bulk("d"), bulk("5")]),
        bulk("7"),
        Value::Array(vec![bulk("6 tsix"), bulk("7 bseven")]),
    ]);
    let EngineReply::Claimed(Some(c)) = s.decode(Expect::Claim, claim) else {
        panic!()
    };
    assert!(!c.mine);
    assert_eq!((c.directs.delivered, c.directs.seq), (5, 7));
    let kept: Vec<(u64, bool)> = c.directs.kept.iter().map(|m| (m.seq, m.binary)).collect();
    assert_eq!(kept, [(6, false), (7, true)]);
    assert!(matches!(
        s.decode(Expect::Routed, Value::Int(-1)),
        EngineReply::Routed(-1)
    ));
    assert!(matches!(
        s.decode(Expect::Kept, Value::Int(9)),
        EngineReply::Kept(9)
    ));
}
