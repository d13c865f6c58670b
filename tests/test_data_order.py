"""The training order: ``trainer.group_by_length`` batches rows of like length."""

import torch

from dlrun.engine.progress import DataOrder, TrainState


class Trainer:
    seed, shuffle, group_by_length = 5, True, True


def epoch(order: DataOrder, state: TrainState) -> list[torch.Tensor]:
    start = state.epoch
    batches = []
    while state.epoch == start:
        batches.append(order.next(state))
    return batches


def padded_width(batches: list[torch.Tensor], lengths: torch.Tensor) -> int:
    """Rows times the longest row, summed over the batches: what a cut batch computes."""
    return sum(len(b) * int(lengths[b].max()) for b in batches)


def test_grouped_batches_are_a_permutation_with_less_padding():
    n, size = 1000, 16
    lengths = torch.randint(1, 60, (n,), generator=torch.Generator().manual_seed(0))
    grouped = DataOrder(n, size, 1, Trainer, pin=False, lengths=lengths)
    plain = DataOrder(n, size, 1, Trainer, pin=False)
    g_state, p_state = TrainState(), TrainState()
    for _ in range(2):
        g, p = epoch(grouped, g_state), epoch(plain, p_state)
        assert sorted(torch.cat(g).tolist()) == list(range(n))  # every row once an epoch
        assert [len(b) for b in g] == [len(b) for b in p]  # the same batches per epoch
        assert padded_width(g, lengths) < 0.7 * padded_width(p, lengths)
    # Each batch's spread of lengths is a pool's, not the whole data's.
    assert max(int(lengths[b].max() - lengths[b].min()) for b in g[:-1]) < 20


def test_grouped_order_is_rebuilt_exactly_from_seed_and_epoch():
    lengths = torch.arange(300) % 17
    a = DataOrder(300, 8, 1, Trainer, pin=False, lengths=lengths)
    b = DataOrder(300, 8, 1, Trainer, pin=False, lengths=lengths)
    sa, sb = TrainState(), TrainState()
    first = epoch(a, sa)
    second = epoch(a, sa)
    assert not all(torch.equal(x, y) for x, y in zip(first, second))  # a new mix each epoch
    sb.epoch, sb.batch_in_epoch = 1, 3  # a resumed run: only its position is saved
    assert all(torch.equal(x, y) for x, y in zip(second[3:], epoch(b, sb)))


def test_no_grouping_without_shuffle_or_when_switched_off():
    lengths = torch.arange(40)

    class Off(Trainer):
        group_by_length = False

    class Stored(Trainer):
        shuffle = False

    plain = DataOrder(40, 4, 1, Trainer, pin=False)
    off = DataOrder(40, 4, 1, Off, pin=False, lengths=lengths)
    assert torch.equal(torch.cat(epoch(off, TrainState())), torch.cat(epoch(plain, TrainState())))
    stored = DataOrder(40, 4, 1, Stored, pin=False, lengths=lengths)
    assert torch.cat(epoch(stored, TrainState())).tolist() == list(range(40))
