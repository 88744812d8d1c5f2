from __future__ import annotations

import pytest
import torch

import pruners


def test_digits_split_is_fixed_stratified_and_held_out(workload: pruners.Workload) -> None:
    assert (len(workload.train), len(workload.test)) == (1437, 360)
    test_labels = torch.tensor([workload.test[i][1] for i in range(len(workload.test))])
    assert torch.bincount(test_labels, minlength=10).min() >= 35, "every class is in the held-out split"
    again = pruners.digits()
    assert torch.equal(workload.test_batch(360), again.test_batch(360))
    other = pruners.digits(seed=1)
    assert not torch.equal(workload.test_batch(360), other.test_batch(360))
    train = {tuple(workload.train.images[i].flatten()[::7].tolist()) for i in range(len(workload.train))}
    test = [tuple(workload.test.images[i].flatten()[::7].tolist()) for i in range(len(workload.test))]
    assert sum(t in train for t in test) <= 2, "test images must not be copies of training images"


def test_images_are_standardised_rgb(workload: pruners.Workload) -> None:
    image, label = workload.test[0]
    assert image.shape == (3, 32, 32) and 0 <= label < 10
    batch = next(iter(workload.loader("train", batch_size=256)))[0]
    assert abs(batch.mean().item()) < 0.2 and 0.8 < batch.std().item() < 1.2


def test_only_training_images_are_shifted(workload: pruners.Workload) -> None:
    torch.manual_seed(0)
    train_views = [workload.train[0][0] for _ in range(8)]
    assert any(not torch.equal(train_views[0], v) for v in train_views[1:])
    assert torch.equal(workload.test[0][0], workload.test[0][0])


def test_train_loader_is_seeded(workload: pruners.Workload) -> None:
    first = [labels for _, labels in workload.loader("train", 64, seed=3)]
    second = [labels for _, labels in workload.loader("train", 64, seed=3)]
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


def test_bad_split_and_batch_are_errors(workload: pruners.Workload) -> None:
    with pytest.raises(ValueError, match="split"):
        workload.loader("val", 8)
    with pytest.raises(ValueError, match="exceeds the 360 test images"):
        workload.test_batch(1000)


@pytest.mark.parametrize("threads", [1, 2])
def test_the_digits_are_normalised_alike_at_any_thread_count(threads: int) -> None:
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        built = pruners.digits()
    finally:
        torch.set_num_threads(before)
    normalize = built.test.transform
    assert (normalize.mean[0], normalize.std[0]) == (0.3053833842277527, 0.32365161180496216)


def test_channel_stats_are_the_exact_statistics_rounded_to_float32() -> None:
    images = torch.randint(
        0, 256, (3000, 2, 28, 28), generator=torch.Generator().manual_seed(0), dtype=torch.uint8
    )
    mean, std = pruners.data.channel_stats(images, scale=255)
    for c in range(2):
        values = images[:, c].flatten().tolist()
        n, total, squares = len(values), sum(values), sum(v * v for v in values)
        exact_mean = total / n / 255
        exact_std = ((squares - total * total / n) / (n - 1)) ** 0.5 / 255
        assert mean[c] == float(torch.tensor(exact_mean, dtype=torch.float32))
        assert std[c] == float(torch.tensor(exact_std, dtype=torch.float32))


def test_a_workload_source_imported_again_registers_again_and_another_one_clashes() -> None:
    source = pruners.workloads.workload_sources()["folder:*"]
    assert pruners.workloads.register_workload("folder:*", source.family)(source.create) is source.create
    assert pruners.workloads.workload_sources()["folder:*"] == source

    def create(name: str, model_name: str | None, options: object) -> pruners.Workload:
        raise AssertionError("never called")

    with pytest.raises(ValueError, match="workload source 'folder:\\*' is already registered"):
        pruners.workloads.register_workload("folder:*")(create)
