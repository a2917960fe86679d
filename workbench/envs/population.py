"""Populations: the envs of P members held as one batched env of P x N sub-envs.

Sub-envs are member-major: sub-env ``member * N + j`` is sub-env ``j`` of ``member``.
Member ``i`` behaves exactly as a single env built with ``seed=member_seeds[i]`` and
``num_envs=N``: same observations, rewards and flags under the same actions. So its state
can be checkpointed on its own (``member_state_dict(i)`` is what that single env's
``state_dict()`` returns), loaded into a single run, or replaced (``reset_member``).

An env class supports populations natively when its constructor takes ``member_seeds``
(``supports_members``); ``PopulationEnv`` gives any other class the same interface by
holding P single envs side by side.

``skip_members(mask)`` tells an env whose members' outputs the caller will ignore (empty slots,
members not being evaluated): an env where each member costs its own simulator steps (the
Gymnasium adapter, ``PopulationEnv``) leaves them unstepped, so an idle member costs nothing;
a batched torch env steps everyone anyway (one op either way). A skipped member's envs keep
their state, report reward 0 and no episode end, and step again once the mask drops them.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

import torch
from tensordict import TensorDict

from workbench.envs.base import BatchedEnv, StepResult, as_env_ids


def supports_members(env_class: type) -> bool:
    """Whether ``env_class`` builds a whole population itself (its constructor takes ``member_seeds``)."""
    return "member_seeds" in inspect.signature(env_class).parameters


def member_seed_list(seed: int, member_seeds: Sequence[int] | None) -> list[int]:
    """The seeds a native env builds its members from: ``[seed]`` for a single env."""
    seeds = [seed] if member_seeds is None else [int(s) for s in member_seeds]
    if not seeds:
        raise ValueError("member_seeds must hold at least one seed")
    return seeds


def group_by_member(ids: torch.Tensor, member_num_envs: int, num_members: int) -> tuple[torch.Tensor, list[int]]:
    """``ids`` stably sorted by member, and how many belong to each member.

    Stable, so each member sees its ids in the caller's order, as its single env would.
    """
    if num_members == 1:
        return ids, [ids.numel()]
    member = torch.div(ids, member_num_envs, rounding_mode="floor")
    order = torch.sort(member, stable=True).indices
    return ids[order], torch.bincount(member, minlength=num_members).tolist()


class MemberStateMixin:
    """Whole-population ``state_dict``/``load_state_dict`` built from the per-member ones.

    One member: exactly the single env's state (so today's checkpoints load unchanged).
    Several: ``{"members": [member_state_dict(i) for each member]}``. Keys in
    ``shared_state_keys`` (one value for the whole population) are restored from the first
    member's state by ``load_state_dict``, never by ``load_member_state_dict``.
    """

    num_members: int
    member_num_envs: int
    shared_state_keys: tuple[str, ...] = ()

    def skip_members(self, mask: Sequence[bool] | torch.Tensor) -> None:
        """A hint: the next steps' outputs of the members where ``mask`` is set are ignored
        (module docstring). The default steps them anyway."""
        skipped_list(mask, self.num_members)  # checked all the same

    def member_slice(self, member: int) -> slice:
        if not 0 <= member < self.num_members:
            raise IndexError(f"member {member} out of range for {self.num_members} members")
        return slice(member * self.member_num_envs, (member + 1) * self.member_num_envs)

    def member_state_dict(self, member: int) -> dict:
        raise NotImplementedError

    def load_member_state_dict(self, member: int, state: dict) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict:
        if self.num_members == 1:
            return self.member_state_dict(0)
        return {"members": [self.member_state_dict(i) for i in range(self.num_members)]}

    def member_states(self, state: dict) -> list[dict]:
        """The per-member states inside a whole-population ``state``."""
        members = state["members"] if "members" in state else [state]
        if len(members) != self.num_members:
            raise ValueError(f"env state holds {len(members)} members, this env has {self.num_members}")
        return members

    def load_state_dict(self, state: dict) -> None:
        members = self.member_states(state)
        for i, member_state in enumerate(members):
            self.load_member_state_dict(i, member_state)
        for key in self.shared_state_keys:
            if key in members[0]:
                setattr(self, key, members[0][key])


class TorchMembers(MemberStateMixin):
    """Population support for a torch-native env whose state is ``[num_envs]`` tensors.

    The dynamics stay one batched op over all P x N envs; only the reset draws loop over
    members, each from its own ``torch.Generator`` seeded like the single env's.
    ``state_names`` lists the state tensors in the single env's ``state_dict`` order.
    """

    state_names: tuple[str, ...] = ()

    def _init_members(self, num_envs: int, seed: int, member_seeds: Sequence[int] | None) -> None:
        seeds = member_seed_list(seed, member_seeds)
        self.num_members, self.member_num_envs = len(seeds), num_envs
        self.num_envs = num_envs * len(seeds)
        self.generators = [self._new_generator(s) for s in seeds]

    def _new_generator(self, seed: int) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(seed)

    @property
    def generator(self) -> torch.Generator:
        """The single env's generator (member 0's in a population)."""
        return self.generators[0]

    def draw_reset(self, ids: torch.Tensor, sample: Callable[[torch.Generator, int], tuple[torch.Tensor, ...]]):
        """``(ids, draws)``: ``sample(generator, n)`` for each member's share of ``ids``, concatenated.

        ``ids`` come back in the order of the draws (grouped by member), ready to index with.
        """
        ids, counts = group_by_member(ids, self.member_num_envs, self.num_members)
        parts = [sample(generator, n) for generator, n in zip(self.generators, counts) if n]
        if len(parts) == 1:
            return ids, parts[0]
        return ids, tuple(torch.cat(column) for column in zip(*parts))

    def member_state_dict(self, member: int) -> dict:
        rows = self.member_slice(member)
        state = {name: getattr(self, name)[rows].clone() for name in self.state_names}
        return state | {"generator": self.generators[member].get_state()}

    def load_member_state_dict(self, member: int, state: dict) -> None:
        rows = self.member_slice(member)
        for name in self.state_names:
            getattr(self, name)[rows] = state[name]
        self.generators[member].set_state(state["generator"])

    def reset_member(self, member: int, seed: int) -> None:
        """Make ``member`` what a fresh single env with ``seed`` is: a new generator, all its envs reset."""
        rows = self.member_slice(member)
        self.generators[member] = self._new_generator(seed)
        self.reset(torch.arange(rows.start, rows.stop, device=self.device))


class PopulationEnv(MemberStateMixin):
    """P single envs of any class side by side, as one env of P x N sub-envs (member-major).

    The fallback for env classes without native population support: each member is a
    single env built by ``make_member(seed)``, stepped in turn; results are concatenated.
    """

    def __init__(self, make_member: Callable[[int], BatchedEnv], member_seeds: Sequence[int]):
        self.make_member = make_member
        self.envs = [make_member(seed) for seed in member_seed_list(0, member_seeds)]
        first = self.envs[0]
        if any(env.num_envs != first.num_envs or env.action_dim != first.action_dim for env in self.envs):
            raise ValueError("every member env must have the same num_envs and action_dim")
        self.num_members, self.member_num_envs = len(self.envs), first.num_envs
        self.num_envs = self.num_members * self.member_num_envs
        self.action_dim, self.device, self.dt = first.action_dim, first.device, first.dt
        self.max_episode_length = first.max_episode_length
        self._skipped = [False] * self.num_members

    def skip_members(self, mask: Sequence[bool] | torch.Tensor) -> None:
        self._skipped = skipped_list(mask, self.num_members)

    @property
    def max_episode_length(self) -> int:
        return self._max_episode_length

    @max_episode_length.setter
    def max_episode_length(self, value: int) -> None:
        # one shared limit (the curriculum sets it): every member env gets it
        self._max_episode_length = value
        for env in self.envs:
            env.max_episode_length = value

    def reset(self, env_ids: torch.Tensor | None = None) -> TensorDict:
        if env_ids is None:
            return torch.cat([env.reset(None) for env in self.envs])
        ids, counts = group_by_member(as_env_ids(env_ids, self.num_envs, self.device),
                                      self.member_num_envs, self.num_members)
        obs = []
        for member, (env, member_ids) in enumerate(zip(self.envs, ids.split(counts))):
            local = member_ids - member * self.member_num_envs
            obs.append(env.reset(local) if local.numel() else env.get_obs())
        return torch.cat(obs)

    def step(self, action: torch.Tensor) -> StepResult:
        stepped = [not skip for skip in self._skipped]
        if not any(stepped):
            stepped = [True] * self.num_members
        parts = action.split(self.member_num_envs)
        results = [env.step(part) if go else None for env, part, go in zip(self.envs, parts, stepped)]
        template = next(r for r in results if r is not None)
        results = [r if r is not None else _idle_result(env.get_obs(), template)
                   for env, r in zip(self.envs, results)]
        # member-major; a member env's scalar extra becomes that member's one value
        extras = {key: torch.cat([r.extras[key].reshape(-1) for r in results]) for key in results[0].extras}
        return StepResult(torch.cat([r.obs for r in results]), torch.cat([r.reward for r in results]),
                          torch.cat([r.terminated for r in results]), torch.cat([r.truncated for r in results]),
                          extras)

    def get_obs(self) -> TensorDict:
        return torch.cat([env.get_obs() for env in self.envs])

    def on_epoch_end(self, epoch: int) -> None:
        for env in self.envs:
            env.on_epoch_end(epoch)

    def member_state_dict(self, member: int) -> dict:
        self.member_slice(member)  # range check
        return self.envs[member].state_dict()

    def load_member_state_dict(self, member: int, state: dict) -> None:
        self.member_slice(member)
        self.envs[member].load_state_dict(state)
        self.envs[member].max_episode_length = self.max_episode_length  # stays shared

    def load_state_dict(self, state: dict) -> None:
        for env, member_state in zip(self.envs, self.member_states(state), strict=True):
            env.load_state_dict(member_state)
        # a member env whose state holds the limit restored it: that is the population's limit again
        self.max_episode_length = self.envs[0].max_episode_length

    def reset_member(self, member: int, seed: int) -> None:
        """Replace ``member`` by a fresh single env built with ``seed``."""
        self.member_slice(member)
        self.envs[member].close()
        self.envs[member] = self.make_member(seed)
        self.envs[member].max_episode_length = self.max_episode_length

    def close(self) -> None:
        for env in self.envs:
            env.close()


def skipped_list(mask: Sequence[bool] | torch.Tensor, num_members: int) -> list[bool]:
    """``skip_members``' mask as one bool per member, checked."""
    skipped = [bool(x) for x in (mask.tolist() if torch.is_tensor(mask) else mask)]
    if len(skipped) != num_members:
        raise ValueError(f"skip mask has {len(skipped)} entries for {num_members} members")
    return skipped


def _idle_result(obs: TensorDict, like: StepResult) -> StepResult:
    """What a skipped member reports: its current obs, reward 0, no episode end, zero extras."""
    n = obs.batch_size[0]
    return StepResult(obs, like.reward.new_zeros(n), like.terminated.new_zeros(n), like.truncated.new_zeros(n),
                      {key: value.new_zeros(value.shape) for key, value in like.extras.items()})
