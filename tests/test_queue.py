import pytest
import torch

from regioncl.queue import KeyQueue


def test_enqueue_and_wrap_around():
    q = KeyQueue(size=8, dim=3)
    batches = [torch.full((4, 3), float(i)) for i in range(1, 4)]
    q.enqueue(batches[0])
    assert int(q.ptr) == 4 and torch.equal(q.keys[:4], batches[0])
    q.enqueue(batches[1])
    assert int(q.ptr) == 0 and torch.equal(q.keys[4:], batches[1])
    q.enqueue(batches[2])  # overwrites the oldest
    assert int(q.ptr) == 4
    assert torch.equal(q.keys[:4], batches[2]) and torch.equal(q.keys[4:], batches[1])


def test_queue_is_in_the_state_dict_and_round_trips():
    q = KeyQueue(size=8, dim=3)
    q.enqueue(torch.ones(4, 3))
    state = q.state_dict()
    assert set(state) == {"keys", "ptr"}
    r = KeyQueue(size=8, dim=3)
    r.load_state_dict(state)
    assert torch.equal(r.keys, q.keys) and int(r.ptr) == 4


def test_batch_that_does_not_divide_the_queue_is_refused():
    q = KeyQueue(size=10, dim=3)
    with pytest.raises(ValueError, match="not a multiple of the global batch"):
        q.enqueue(torch.ones(4, 3))
    with pytest.raises(ValueError, match="not a multiple"):
        q.check_batch(3)


def test_initial_keys_are_normalised():
    q = KeyQueue(size=16, dim=5)
    assert torch.allclose(q.keys.norm(dim=1), torch.ones(16), atol=1e-5)
