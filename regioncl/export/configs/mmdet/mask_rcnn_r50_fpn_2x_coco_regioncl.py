# Mask R-CNN R50-FPN, 2x schedule (24 epochs), COCO, initialised from a RegionCL encoder.
#
# Base: mmdet 3.x configs/mask_rcnn/mask-rcnn_r50_fpn_2x_coco.py (open-mmlab/mmdetection),
# reached through mmengine's "mmdet::" scope so that this file works from any folder once mmdet
# is installed (or copy it into mmdetection/configs/mask_rcnn/ and use the relative path).
# SyncBN and the 4conv1fc box head follow mmdet's
# configs/selfsup_pretrain/mask_rcnn_r50_fpn_4conv1fc_syncbn_*.py and detectron2's
# mask_rcnn_R_50_FPN_3x_syncbn.yaml (as ../detectron2/mask_rcnn_R_50_FPN_2x_regioncl.yaml).
#
# Weights: python scripts/convert_mmdet.py OUTPUT_DIR/encoder.safetensors regioncl_r50_mmdet.pth
# Train:   bash tools/dist_train.sh mask_rcnn_r50_fpn_2x_coco_regioncl.py 8
_base_ = "mmdet::mask_rcnn/mask-rcnn_r50_fpn_2x_coco.py"

norm_cfg = dict(type="SyncBN", requires_grad=True)

model = dict(
    # RGB in, torchvision's mean/std on the 0-255 scale: the encoder's pretraining statistics.
    data_preprocessor=dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], bgr_to_rgb=True),
    backbone=dict(
        # Train every stage and the stem (detectron2 FREEZE_AT 0, as MoCo): frozen_stages=0
        # would still freeze the stem.
        frozen_stages=-1,
        norm_cfg=norm_cfg,
        norm_eval=False,
        # The converted file holds "backbone."-prefixed keys (a detector checkpoint's layout);
        # without prefix='backbone.' mmengine loads none of them, with only a warning
        # (strict=False).
        init_cfg=dict(type="Pretrained", prefix="backbone.", checkpoint="regioncl_r50_mmdet.pth"),
    ),
    neck=dict(norm_cfg=norm_cfg),
    roi_head=dict(
        bbox_head=dict(type="Shared4Conv1FCBBoxHead", conv_out_channels=256, norm_cfg=norm_cfg),
        mask_head=dict(norm_cfg=norm_cfg),
    ),
)
