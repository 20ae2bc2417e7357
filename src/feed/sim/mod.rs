//! The simulated feed's runtime: drives the [`model`] on the wall clock and publishes its ticks.
//!
//! The model produces ticks on its own schedule (seconds since it started, a Poisson process
//! at the configured rate); this task sleeps until each tick is due and publishes it. A pause
//! stops the schedule (the model does not advance, so nothing is skipped or bunched up on
//! resume); a speed change sets the model's time scale — how much model time passes per wall
//! second — and leaves the tick rate and the clock alone. `ts` of a simulated quote is the wall
//! clock at publication.
//!
//! At high rates ticks are published in batches of everything already due, yielding to the
//! executor every [`BATCH`] ticks, so a 1,000,000 quotes/s feed costs no timer per tick.

pub(crate) mod model;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;
use tokio::time::{Instant, sleep_until};

use self::model::{SimModel, SimParams};
use super::universe::{Instrument, default_universe, load_universe};
use super::{ControlAction, ControlError, ControlRequest, DayStats, FeedControl, FeedEvent, FeedHandle, FeedKind, FeedState, FeedStatus, StartError, control_pair};
use crate::bus::{Publisher, SymbolInfo, Topic};
use crate::feed::FeedConfig;
use crate::quote::{decimals_of_tick, now_millis};

/// Ticks published between yields to the executor.
const BATCH: usize = 1024;
/// How often counters and lag are written to the shared status.
const STATUS_EVERY: Duration = Duration::from_millis(100);

/// Loads the universe, registers its symbols and spawns the feed task.
pub(crate) fn start(config: &FeedConfig, publisher: Arc<dyn Publisher>, events: broadcast::Sender<FeedEvent>) -> Result<FeedHandle, StartError> {
    let instruments = match &config.universe {
        Some(path) => load_universe(path)?,
        None => default_universe(),
    };
    if instruments.is_empty() {
        return Err(StartError::Invalid { feed: config.name.clone(), message: "the universe has no instrument".into() });
    }
    let mut topics = Vec::with_capacity(instruments.len());
    for instrument in &instruments {
        let symbol = format!("{}{}", instrument.symbol, config.suffix);
        let info = SymbolInfo { name: instrument.name.clone(), sector: instrument.sector.clone(), feed: config.name.as_str().into() };
        topics.push(publisher.register(&symbol, info)?);
    }
    let params = SimParams { seed: config.seed, rate: config.rate, time_scale: config.speed, ..SimParams::default() };
    let model = SimModel::new(&instruments, params);
    let status = FeedStatus::new(&config.name, FeedKind::Sim, config.speed, instruments.len());
    let (handle, control) = control_pair(status, events);
    tokio::spawn(run(model, instruments, topics, publisher, control));
    Ok(handle)
}

struct Instrumented {
    topic: Arc<Topic>,
    stats: DayStats,
    decimals: u8,
}

async fn run(mut model: SimModel, instruments: Vec<Instrument>, topics: Vec<Arc<Topic>>, publisher: Arc<dyn Publisher>, mut control: FeedControl) {
    let mut symbols: Vec<Instrumented> = instruments
        .iter()
        .zip(topics)
        .map(|(instrument, topic)| Instrumented { topic, stats: DayStats::new(0, instrument.price), decimals: decimals_of_tick(instrument.tick_size) })
        .collect();
    control.update(true, |s| s.state = FeedState::Running);
    // Wall time of schedule time 0; moved forward by the length of every pause.
    let mut origin = Instant::now();
    let mut published: u64 = 0;
    let mut next_status = Instant::now() + STATUS_EVERY;
    let mut tick = model.next_tick();
    loop {
        let due = origin + Duration::from_secs_f64(tick.at);
        let now = Instant::now();
        if due > now {
            tokio::select! {
                _ = sleep_until(due) => {}
                request = control.commands.recv() => {
                    let Some(request) = request else { return };
                    if let Some(paused_for) = handle(&mut control, &mut model, request).await {
                        origin += paused_for;
                    }
                }
            }
            continue;
        }
        let mut lag = 0.0;
        for _ in 0..BATCH {
            let due = origin + Duration::from_secs_f64(tick.at);
            if due > now {
                break;
            }
            lag = (now - due).as_secs_f64();
            let symbol = &mut symbols[tick.index];
            symbol.stats.trade(0, tick.last, tick.size);
            let draft = symbol.stats.draft(now_millis(), tick.bid, tick.ask, tick.size, symbol.decimals);
            publisher.publish(&symbol.topic, &draft);
            published += 1;
            tick = model.next_tick();
        }
        if now >= next_status {
            next_status = now + STATUS_EVERY;
            control.update(false, |s| {
                s.quotes_published = published;
                s.rows_read = published;
                s.lag_seconds = lag;
            });
        }
        tokio::task::yield_now().await;
    }
}

/// Applies a control command. Returns how long the feed was paused, if the command paused it
/// (the pause lasts until a resume arrives; other commands are answered meanwhile).
async fn handle(control: &mut FeedControl, model: &mut SimModel, request: ControlRequest) -> Option<Duration> {
    match request.action {
        ControlAction::Pause => {
            let paused_at = Instant::now();
            let status = control.update(true, |s| {
                s.state = FeedState::Paused;
                s.lag_seconds = 0.0;
            });
            let _ = request.reply.send(Ok(status));
            while let Some(request) = control.commands.recv().await {
                match request.action {
                    ControlAction::Resume => {
                        let status = control.update(true, |s| s.state = FeedState::Running);
                        let _ = request.reply.send(Ok(status));
                        return Some(paused_at.elapsed());
                    }
                    ControlAction::Pause => {
                        let _ = request.reply.send(Ok(control.status()));
                    }
                    other => {
                        let answer = apply_other(control, model, other);
                        let _ = request.reply.send(answer);
                    }
                }
            }
            None
        }
        ControlAction::Resume => {
            let _ = request.reply.send(Ok(control.status()));
            None
        }
        other => {
            let answer = apply_other(control, model, other);
            let _ = request.reply.send(answer);
            None
        }
    }
}

/// What a simulation's speed may be, as an error message states it. 0 is refused although the
/// model would take it (prices would freeze while trades keep printing): the configuration
/// refuses it too, and a feed that prints trades at unchanging prices looks broken.
const SPEED_RULE: &str = "a simulation's speed (model seconds per wall second) must be > 0 and <= 1e12";

fn speed_accepted(value: f64) -> bool {
    value > 0.0 && value <= super::MAX_SPEED
}

fn apply_other(control: &FeedControl, model: &mut SimModel, action: ControlAction) -> Result<FeedStatus, ControlError> {
    match action {
        ControlAction::Speed(value) => {
            if !speed_accepted(value) {
                return Err(ControlError::InvalidSpeed { feed: control.status().name.to_string(), value, accepts: SPEED_RULE });
            }
            model.set_time_scale(value);
            Ok(control.update(true, |s| s.speed = value))
        }
        ControlAction::Seek { .. } => Err(ControlError::Unsupported(control.status().name.to_string(), "seek (a simulation has no history)")),
        ControlAction::Pause | ControlAction::Resume => Ok(control.status()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speed_rule_matches_its_text() {
        assert!(SPEED_RULE.ends_with("> 0 and <= 1e12") && super::super::MAX_SPEED == 1e12);
        for (value, accepted) in [(0.0, false), (-1.0, false), (f64::MIN_POSITIVE, true), (1e12, true), (1.000001e12, false), (f64::NAN, false), (f64::INFINITY, false)] {
            assert_eq!(speed_accepted(value), accepted, "speed {value}");
        }
    }
}
