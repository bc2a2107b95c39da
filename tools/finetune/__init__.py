"""TimeNoise fine-tuning (Zhao et al. 2024, §4.2; docs/design.md §3.7; docs/finetuning.md).

    tools.finetune.timenoise   the TimeNoise corruption and its adapters (lvdm conditioning dicts, SVD UNet inputs)
    tools.finetune.train       the training loop: python3 -m tools.finetune.train --help (torchrun for several GPUs)
    tools.finetune.recipes     what the loop needs from a model family (lvdm, svd, or your own)
    tools.finetune.storage     checkpoints in a folder or under s3:// (through the AWS CLI), resumable
    tools.finetune.batch       the AWS Batch steps of the CDK workflow: train, export, publish
    tools.finetune.spec        the run's spec those steps read ($CIL_FINETUNE_SPEC) and its S3 keys
    tools.finetune.nodes       one node's training processes (rank layout, torch.distributed environment)
    tools.finetune.toyvideos   synthetic moving-shape clips (tests, the real-class fine-tune)

Dependencies: the Python standard library and torch (numpy in the tests); the model's own code is
imported from the checkout the user names, at run time.
"""
