import torch
import torch.nn.functional as F

from regioncl.knn import knn_predict, knn_top1


def clusters(n_per, classes, dim=16, noise=0.05, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(classes, dim, generator=g), dim=1)
    labels = torch.arange(classes).repeat_interleave(n_per)
    x = centres[labels] + noise * torch.randn(len(labels), dim, generator=g)
    return F.normalize(x, dim=1), labels


def test_separated_clusters_are_classified_perfectly():
    bank, bl = clusters(30, 5)
    q, ql = clusters(10, 5, seed=0)
    assert knn_top1(bank, bl, q, ql, k=20).item() == 1.0


def test_random_labels_give_chance_level():
    bank, _ = clusters(200, 4)
    labels = torch.randint(0, 4, (len(bank),), generator=torch.Generator().manual_seed(1))
    q, ql = clusters(50, 4, seed=2)
    acc = knn_top1(bank, labels, q, ql, k=20).item()
    assert 0.1 < acc < 0.45


def test_chunked_equals_unchunked():
    bank, bl = clusters(20, 3, noise=0.8)
    q, _ = clusters(7, 3, noise=0.8, seed=3)
    assert torch.allclose(knn_predict(bank, bl, q, k=9, chunk_size=4), knn_predict(bank, bl, q, k=9, chunk_size=1000))


def test_votes_are_temperature_weighted():
    bank = F.normalize(torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]]), dim=1)
    labels = torch.tensor([0, 1, 1])
    q = torch.tensor([[1.0, 0.0]])
    scores = knn_predict(bank, labels, q, k=3, temperature=0.5)
    expected = torch.tensor([[torch.exp(torch.tensor(2.0)), torch.exp(torch.tensor(1.6)) + torch.exp(torch.tensor(0.0))]])
    assert torch.allclose(scores, expected)
