# SimpleBaseline (ResNet-50 + deconvolution heatmap head), AP-10K animal keypoints, 256x256
# input, initialised from a RegionCL encoder (paper A.3: Adam, lr 1e-4, 210 epochs, lr x0.1 at
# epochs 170 and 200).
#
# Base: mmpose 1.x configs/animal_2d_keypoint/topdown_heatmap/ap10k/
# td-hm_res50_8xb64-210e_ap10k-256x256.py (open-mmlab/mmpose), reached through mmengine's
# "mmpose::" scope (or copy this file next to the base and use its file name).
#
# Weights: python scripts/convert_mmdet.py OUTPUT_DIR/encoder.safetensors regioncl_r50_mmdet.pth
# (mmpose's ResNet has mmdet's key names.)
# Train:   bash tools/dist_train.sh td-hm_res50_8xb64-210e_ap10k-256x256_regioncl.py 8
_base_ = "mmpose::animal_2d_keypoint/topdown_heatmap/ap10k/td-hm_res50_8xb64-210e_ap10k-256x256.py"

train_cfg = dict(max_epochs=210)

optim_wrapper = dict(optimizer=dict(type="Adam", lr=1e-4))

# A list replaces the base's list whole, so the base's 500-iteration linear warm-up is restated.
param_scheduler = [
    dict(type="LinearLR", begin=0, end=500, start_factor=0.001, by_epoch=False),
    dict(type="MultiStepLR", begin=0, end=210, milestones=[170, 200], gamma=0.1, by_epoch=True),
]

model = dict(
    backbone=dict(
        # "backbone."-prefixed keys: select and strip them, else nothing would load (strict=False).
        init_cfg=dict(type="Pretrained", prefix="backbone.", checkpoint="regioncl_r50_mmdet.pth")
    )
)
