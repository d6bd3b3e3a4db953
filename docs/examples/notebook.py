"""A notebook-style session with the Python client: register, submit, follow, read the results.

Run it as a script (each block is a notebook cell): HPCGW_URL and HPCGW_TOKEN name the gateway, HPCGW_ADMIN_TOKEN
an admin's token (to register the trainer), DEMO_DATA_VERSION the intent dataset's version hash and DEMO_IMAGE the
trainer's Apptainer image, a file below the gateway's image_roots (`make image` builds .hpcgw/images/
intent-classifier.sif). On a gateway with container runtime 'none', DEMO_TRAINER names the trainer script to run bare
instead. The test suite runs it against the local cluster.
"""

# %% connect
import os
import sys

from gateway.client import Client, ClientError

client = Client()  # HPCGW_URL / HPCGW_TOKEN, or ~/.config/hpcgw/config.toml
print("teams:", [t.name for t in client.teams()])

# %% register the trainer once (409 when it exists already), for team-a, with an admin's token (HPCGW_ADMIN_TOKEN):
# the gateway records the image's SHA-256, and every job of this version runs exactly those bytes. A local_command (a
# trainer run outside any image, for runtime 'none') is an admin's alone to register.
bare = {"local_command": [sys.executable, os.environ["DEMO_TRAINER"]]} if "DEMO_TRAINER" in os.environ else {}
try:
    Client(token=os.environ["HPCGW_ADMIN_TOKEN"]).create_algorithm(
        {
            "name": "nb-classifier",
            "version": "1",
            "team": "team-a",
            "image": os.environ["DEMO_IMAGE"],
            "command": ["python", "/opt/intent-classifier/train.py"],
            **bare,
        }
    )
except ClientError as exc:
    if exc.status_code != 409:
        raise

# %% submit and follow
job = client.submit(
    {
        "name": "nb-run",
        "algorithm": "nb-classifier",
        "dataset_id": "intents",
        "train_data_version_hash": os.environ["DEMO_DATA_VERSION"],
        "nodes": 1,
        "tasks_per_node": 2,
        "parameters": {"SEED": 3, "EPOCHS": 2, "LR": 0.3},
    }
)
job = client.wait(job.id, timeout_s=600, on_change=lambda j: print("state:", j.state.value))

# %% results
epochs = client.metrics(job.id).epochs
for epoch in epochs:
    print(f"epoch {epoch['epoch']}: accuracy {epoch['accuracy']:.3f}")
print("final state:", job.state.value)
sys.exit(0 if job.state.value == "succeeded" and len(epochs) == 2 else 1)
