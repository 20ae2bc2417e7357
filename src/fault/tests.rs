use super::*;
use crate::bus::Bus;
use crate::metrics::ClientLabels;

fn registry() -> (Arc<Faults>, Arc<Bus>, Arc<Metrics>) {
    let bus = Arc::new(Bus::new());
    for symbol in ["AAPL", "MSFT"] {
        bus.register(symbol, SymbolInfo { name: symbol.into(), sector: "Tech".into(), feed: "sim".into() }).unwrap();
    }
    let metrics = Arc::new(Metrics::new(&[], &ClientLabels { ops: &[], error_codes: &[], fault_kinds: &FaultKind::LABELS }));
    (Faults::new(7, metrics.clone(), bus.clone(), vec!["sim".into()]), bus, metrics)
}

fn spec(text: &str) -> FaultSpec {
    FaultSpec::parse_cli(text).unwrap()
}

fn injected(metrics: &Metrics, kind: &str) -> f64 {
    let text = metrics.render(&Bus::new(), &crate::feed::Feeds::remote(Vec::new()).0);
    let series = format!("tickerfeed_faults_injected_total{{kind=\"{kind}\"}} ");
    text.lines().find_map(|line| line.strip_prefix(&series)).unwrap().parse().unwrap()
}

fn draft() -> QuoteDraft {
    QuoteDraft { ts: 0, last: 1.0, bid: 0.99, ask: 1.01, size: 1, volume: 1, open: 1.0, high: 1.0, low: 1.0, prev_close: 1.0, decimals: 2 }
}

#[test]
fn fraction_hits_are_a_function_of_seed_fault_firing_and_session() {
    let hit = |seed, firing| (1..=10_000u64).filter(|&session| hits(seed, 3, firing, session, Some(0.25), None)).collect::<Vec<_>>();
    assert_eq!(hit(7, 1), hit(7, 1), "the same inputs hit the same sessions");
    assert_ne!(hit(7, 1), hit(8, 1), "another seed, other sessions");
    assert_ne!(hit(7, 1), hit(7, 2), "another firing, other sessions");
    let share = hit(7, 1).len() as f64 / 10_000.0;
    assert!((0.23..0.27).contains(&share), "{share}");
    assert!(hits(7, 3, 1, 5, Some(1.0), None) && !hits(7, 3, 1, 5, Some(0.0), None));
    assert!(hits(7, 3, 1, 5, None, Some(5)) && !hits(7, 3, 1, 6, None, Some(5)));
    assert!(hits(7, 3, 1, 5, None, None), "no target: every session");
}

#[tokio::test]
async fn a_session_takes_the_firings_that_target_it_each_counted_once() {
    let (faults, _, metrics) = registry();
    let (mut first, mut second) = (faults.watch(1), faults.watch(2));
    let listed = faults.add(spec("disconnect:session=2,code=4000")).unwrap();
    assert_eq!((listed["id"].as_u64(), listed["fired"].as_u64(), listed["kind"].as_str()), (Some(1), Some(1), Some("disconnect")));
    assert!(!faults.active(), "a one-shot fault leaves once fired");
    tokio::time::timeout(Duration::from_secs(1), second.fired()).await.expect("the firing wakes the session");
    assert_eq!(second.take_actions(), vec![SessionFault::Disconnect { code: Some(4000) }]);
    assert!(second.take_actions().is_empty(), "taken once");
    first.fired().await;
    assert!(first.take_actions().is_empty(), "another session's fault");
    faults.add(spec("duplicate:symbol=AAPL,count=2")).unwrap();
    assert_eq!(first.take_actions(), vec![SessionFault::Duplicate { symbol: Some("AAPL".into()), count: 2 }]);
    assert_eq!(second.take_actions().len(), 1);
    let late = faults.watch(3);
    let mut late = late;
    assert!(late.take_actions().is_empty(), "a session sees the firings after it started");
    assert_eq!((injected(&metrics, "disconnect"), injected(&metrics, "duplicate")), (1.0, 2.0));
    let log = &faults.list()["log"];
    assert_eq!(log.as_array().map(Vec::len), Some(2));
    assert_eq!(log[0]["what"], "session 2");
}

#[tokio::test(start_paused = true)]
async fn faults_fire_every_period_and_expire_after_for() {
    let (faults, _, _) = registry();
    tokio::spawn(faults.clone().run());
    let mut watch = faults.watch(1);
    let listed = faults.add(spec("stall:ms=300,every=1s,for=2500ms")).unwrap();
    assert!(listed["expires_at"].as_u64().is_some());
    assert_eq!(watch.take_actions(), vec![SessionFault::Stall { duration: Duration::from_millis(300) }]);
    let start = Instant::now();
    for expected in [2, 3] {
        watch.fired().await;
        assert_eq!(watch.take_actions().len(), 1);
        assert_eq!(faults.list()["faults"][0]["fired"], expected);
    }
    assert_eq!(Instant::now() - start, Duration::from_secs(2), "fired at 1 s and 2 s");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(!faults.active(), "removed when 'for' elapsed");
    assert_eq!(faults.list()["log"].as_array().map(Vec::len), Some(3));
}

#[tokio::test(start_paused = true)]
async fn a_delay_applies_to_sessions_that_start_while_it_runs() {
    let (faults, _, _) = registry();
    faults.add(spec("delay:ms=500,for=20s")).unwrap();
    let mut watch = faults.watch(9);
    watch.fired().await;
    let actions = watch.take_actions();
    assert!(matches!(actions[..], [SessionFault::Delay { by, until }] if by == Duration::from_millis(500) && until > Instant::now() + Duration::from_secs(19)), "{actions:?}");
    tokio::time::advance(Duration::from_secs(21)).await;
    assert!(faults.watch(10).take_actions().is_empty(), "over: nothing for a new session");
}

#[test]
fn reject_connect_refuses_its_count_then_leaves() {
    let (faults, _, metrics) = registry();
    assert_eq!(faults.reject_connect(), None);
    let listed = faults.add(spec("reject_connect:count=2")).unwrap();
    assert_eq!(listed["remaining"], 2);
    assert_eq!((faults.reject_connect(), faults.reject_connect(), faults.reject_connect()), (Some(1), Some(1), None));
    assert!(!faults.active());
    assert_eq!(injected(&metrics, "reject_connect"), 2.0);
}

#[test]
fn a_gap_skips_count_quotes_and_the_seq_jumps_by_count_plus_one() {
    let (faults, bus, metrics) = registry();
    let publisher = faults.publisher(bus.clone());
    let aapl = bus.topic("AAPL").unwrap();
    let msft = bus.topic("MSFT").unwrap();
    assert_eq!(publisher.publish(&aapl, &draft()), 1);
    faults.add(spec("gap:symbol=AAPL,count=3")).unwrap();
    for _ in 0..3 {
        publisher.publish(&aapl, &draft());
        assert_eq!(publisher.publish(&msft, &draft()), msft.seq(), "other symbols go on");
    }
    assert_eq!(aapl.seq(), 1, "nothing published for the skipped quotes");
    assert_eq!(publisher.publish(&aapl, &draft()), 5);
    assert_eq!(publisher.publish(&aapl, &draft()), 6, "then one by one again");
    assert!(!faults.feed_effects.load(Ordering::Acquire), "nothing left to do: publishes are one load again");
    assert_eq!(injected(&metrics, "gap"), 1.0);
}

#[test]
fn a_feed_stall_drops_the_feeds_quotes_until_it_ends() {
    let (faults, bus, _) = registry();
    let publisher = faults.publisher(bus.clone());
    let aapl = bus.topic("AAPL").unwrap();
    publisher.publish(&aapl, &draft());
    let listed = faults.add(spec("feed_stall:feed=sim,for=5s")).unwrap();
    assert_eq!(publisher.publish(&aapl, &draft()), 1, "dropped, the seq unchanged");
    assert!(faults.remove(listed["id"].as_u64().unwrap()).is_some());
    assert_eq!(publisher.publish(&aapl, &draft()), 2, "no gap in seq after a stall");
    assert!(faults.remove(99).is_none());
}

#[test]
fn the_registry_is_bounded_and_checks_what_a_spec_names() {
    let (faults, _, _) = registry();
    for _ in 0..MAX_ACTIVE {
        faults.add(spec("stall:ms=10,every=1h")).unwrap();
    }
    assert_eq!(faults.add(spec("stall:ms=10,every=1h")), Err(AddError::TooMany));
    assert_eq!(faults.clear(), MAX_ACTIVE);
    assert_eq!(faults.list()["log"].as_array().map(Vec::len), Some(MAX_LOG.min(MAX_ACTIVE)));
    let error = faults.add(spec("gap:symbol=NOPE")).unwrap_err();
    assert_eq!(error.to_string(), "symbol: no feed publishes 'NOPE'");
    let error = faults.add(spec("feed_stall:feed=history,for=1s")).unwrap_err();
    assert_eq!(error.to_string(), "feed: no feed is named 'history'; feeds: sim");
    for _ in 0..MAX_LOG {
        faults.add(spec("disconnect")).unwrap();
    }
    assert_eq!(faults.list()["log"].as_array().map(Vec::len), Some(MAX_LOG), "the log keeps the last {MAX_LOG}");
    assert!(faults.state.lock().unwrap().session_firings.len() <= MAX_SESSION_FIRINGS);
}
