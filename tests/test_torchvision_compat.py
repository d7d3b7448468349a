import torch

from realign_diff.compat import torchvision_ops


def _reference_nms(boxes, scores, threshold):
    order = sorted(range(len(scores)), key=lambda i: -float(scores[i]))
    keep = []
    for i in order:
        if all(float(torchvision_ops.box_iou(boxes[i : i + 1], boxes[j : j + 1])) <= threshold for j in keep):
            keep.append(i)
    return keep


def test_nms_matches_a_plain_greedy_reference():
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        xy = torch.rand(12, 2, generator=generator) * 50
        wh = torch.rand(12, 2, generator=generator) * 30 + 1
        boxes = torch.cat([xy, xy + wh], dim=1)
        scores = torch.rand(12, generator=generator)
        assert torchvision_ops.nms(boxes, scores, 0.4).tolist() == _reference_nms(boxes, scores, 0.4)


def test_nms_on_no_boxes_is_empty():
    assert torchvision_ops.nms(torch.zeros(0, 4), torch.zeros(0), 0.5).numel() == 0


def test_torchvision_imports_after_the_guard():
    torchvision_ops.ensure_torchvision_importable()
    import torchvision  # noqa: F401 - dies with "operator torchvision::nms does not exist" without the guard

    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]])
    assert torch.ops.torchvision.nms(boxes, torch.tensor([0.9, 0.8, 0.7]), 0.5).tolist() == [0, 2]
