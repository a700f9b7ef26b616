//! Restart strategies and child restart types of the stage supervisor, observed through the
//! restart counts in the actor registry and through each child's start number.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ylem_runtime::supervision::policy::{ChildRestart, Strategy};
use ylem_runtime::supervision::{
    ActorRegistry, ActorState, ChildSpec, RestartPolicy, StageSupervisor, StageSupervisorArgs,
};

struct Child;

enum ChildMsg {
    Fail,
    StopNormally,
    StartNumber(RpcReplyPort<usize>),
}

impl Actor for Child {
    type Msg = ChildMsg;
    type State = usize;
    type Arguments = usize;

    async fn pre_start(
        &self,
        _myself: ActorRef<ChildMsg>,
        start_number: usize,
    ) -> Result<usize, ActorProcessingErr> {
        Ok(start_number)
    }

    async fn handle(
        &self,
        myself: ActorRef<ChildMsg>,
        message: ChildMsg,
        start_number: &mut usize,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ChildMsg::Fail => return Err("requested failure".into()),
            ChildMsg::StopNormally => myself.stop(None),
            ChildMsg::StartNumber(reply) => {
                let _ = reply.send(*start_number);
            }
        }
        Ok(())
    }
}

/// One child of the test stage: its current actor and how often it was started.
#[derive(Clone, Default)]
struct Slot {
    current: Arc<Mutex<Option<ActorRef<ChildMsg>>>>,
    starts: Arc<AtomicUsize>,
}

impl Slot {
    fn spec(&self, path: &str, restart: ChildRestart) -> ChildSpec {
        let slot = self.clone();
        ChildSpec::new(path, move |supervisor| {
            let slot = slot.clone();
            async move {
                let start_number = slot.starts.fetch_add(1, Ordering::SeqCst) + 1;
                let (actor, _) = Actor::spawn_linked(None, Child, start_number, supervisor).await?;
                *slot.current.lock().unwrap() = Some(actor.clone());
                Ok(actor.get_cell())
            }
        })
        .with_restart(restart)
    }

    fn actor(&self) -> ActorRef<ChildMsg> {
        self.current.lock().unwrap().clone().expect("child started")
    }

    fn starts(&self) -> usize {
        self.starts.load(Ordering::SeqCst)
    }
}

fn policy(strategy: Strategy) -> RestartPolicy {
    RestartPolicy {
        strategy,
        max_restarts: 5,
        window: Duration::from_secs(60),
        backoff_min: Duration::from_millis(1),
        backoff_max: Duration::from_millis(5),
        backoff_jitter: 0.0,
        ..RestartPolicy::default()
    }
}

struct Stage {
    registry: ActorRegistry,
    slots: Vec<Slot>,
    supervisor: ActorRef<ylem_runtime::supervision::StageMsg>,
}

async fn start_stage(strategy: Strategy, restarts: [ChildRestart; 3]) -> Stage {
    let registry = ActorRegistry::new();
    let slots: Vec<Slot> = (0..3).map(|_| Slot::default()).collect();
    let children = ["test/a", "test/b", "test/c"]
        .iter()
        .zip(&slots)
        .zip(restarts)
        .map(|((path, slot), restart)| slot.spec(path, restart))
        .collect();
    let (supervisor, _) = Actor::spawn(
        None,
        StageSupervisor,
        StageSupervisorArgs {
            stage: "test".to_owned(),
            children,
            policy: policy(strategy),
            registry: registry.clone(),
        },
    )
    .await
    .unwrap();
    Stage {
        registry,
        slots,
        supervisor,
    }
}

impl Stage {
    fn restarts(&self) -> Vec<u64> {
        ["test/a", "test/b", "test/c"]
            .iter()
            .map(|path| self.registry.get(path).map_or(0, |status| status.restarts))
            .collect()
    }

    fn starts(&self) -> Vec<usize> {
        self.slots.iter().map(Slot::starts).collect()
    }

    /// Waits until every child is started `expected` times and running again.
    async fn wait_for_starts(&self, expected: [usize; 3]) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let all_running = ["test/a", "test/b", "test/c"].iter().all(|path| {
                self.registry
                    .get(path)
                    .is_some_and(|status| status.state == ActorState::Running)
            });
            if self.starts() == expected && all_running {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "starts {:?}, expected {expected:?}",
                self.starts()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn start_number(&self, index: usize) -> usize {
        ractor::call!(self.slots[index].actor(), ChildMsg::StartNumber).unwrap()
    }
}

const PERMANENT: [ChildRestart; 3] = [ChildRestart::Permanent; 3];

#[tokio::test]
async fn one_for_one_restarts_only_failed_child() {
    let stage = start_stage(Strategy::OneForOne, PERMANENT).await;
    stage.slots[1].actor().cast(ChildMsg::Fail).unwrap();
    stage.wait_for_starts([1, 2, 1]).await;
    assert_eq!(stage.restarts(), [0, 1, 0]);
    assert_eq!(stage.start_number(1).await, 2);
    stage.supervisor.stop(None);
}

#[tokio::test]
async fn one_for_all_restarts_every_child() {
    let stage = start_stage(Strategy::OneForAll, PERMANENT).await;
    stage.slots[1].actor().cast(ChildMsg::Fail).unwrap();
    stage.wait_for_starts([2, 2, 2]).await;
    assert_eq!(stage.restarts(), [1, 1, 1]);
    for index in 0..3 {
        assert_eq!(stage.start_number(index).await, 2);
    }
    stage.supervisor.stop(None);
}

#[tokio::test]
async fn rest_for_one_restarts_later_children() {
    let stage = start_stage(Strategy::RestForOne, PERMANENT).await;
    stage.slots[1].actor().cast(ChildMsg::Fail).unwrap();
    stage.wait_for_starts([1, 2, 2]).await;
    assert_eq!(stage.restarts(), [0, 1, 1]);
    assert_eq!(stage.start_number(0).await, 1);
    assert_eq!(stage.start_number(2).await, 2);

    // A failure of the last child restarts only that child.
    stage.slots[2].actor().cast(ChildMsg::Fail).unwrap();
    stage.wait_for_starts([1, 2, 3]).await;
    assert_eq!(stage.restarts(), [0, 1, 2]);
    stage.supervisor.stop(None);
}

#[tokio::test]
async fn transient_child_is_restarted_only_after_failure() {
    let restarts = [
        ChildRestart::Transient,
        ChildRestart::Permanent,
        ChildRestart::Permanent,
    ];
    let stage = start_stage(Strategy::OneForOne, restarts).await;
    stage.slots[0].actor().cast(ChildMsg::Fail).unwrap();
    stage.wait_for_starts([2, 1, 1]).await;

    stage.slots[0].actor().cast(ChildMsg::StopNormally).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while stage.registry.get("test/a").map(|status| status.state) != Some(ActorState::Stopped) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "transient child not recorded as stopped"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(stage.starts(), [2, 1, 1]);
    stage.supervisor.stop(None);
}

#[tokio::test]
async fn permanent_child_is_restarted_after_normal_stop() {
    let stage = start_stage(Strategy::OneForOne, PERMANENT).await;
    stage.slots[2].actor().cast(ChildMsg::StopNormally).unwrap();
    stage.wait_for_starts([1, 1, 2]).await;
    assert_eq!(stage.restarts(), [0, 0, 1]);
    stage.supervisor.stop(None);
}

#[tokio::test]
async fn temporary_child_is_never_restarted() {
    let restarts = [
        ChildRestart::Permanent,
        ChildRestart::Temporary,
        ChildRestart::Permanent,
    ];
    let stage = start_stage(Strategy::OneForAll, restarts).await;
    stage.slots[1].actor().cast(ChildMsg::Fail).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while stage.registry.get("test/b").map(|status| status.state) != Some(ActorState::Failed) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "temporary child not recorded as failed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(stage.starts(), [1, 1, 1]);

    // A sibling's failure under one_for_all does not bring the temporary child back.
    stage.slots[0].actor().cast(ChildMsg::Fail).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while stage.starts() != [2, 1, 2] {
        assert!(
            tokio::time::Instant::now() < deadline,
            "starts {:?}",
            stage.starts()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stage.supervisor.stop(None);
}
