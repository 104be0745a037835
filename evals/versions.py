"""How each scorer kind computes its number, as a version: bump a kind's version when a change alters the numbers
(or the metadata the gate compares) of cells already scored. The DAG writes it into the scorer's settings file,
so a bump reruns exactly that kind's score jobs; a results/ folder never mixes numbers from before and after.

Imported by the DAG when it is built: no heavy imports here.
"""

SCORER_VERSIONS = {
    "clip_score": 1,
    # 2: CLIP-FID's extractor preprocesses as clean-fid's clip_vit_b_32 (session 12)
    # 3: a corrupt image is counted in n_failed when the cell path is relative; the reference is checked (session 13)
    "fidelity": 3,
    # 2: headline CI over prompts within each category; undefined when a category has no scores (session 12)
    # 3: a label the judge repeats counts its last score, as upstream (session 13)
    "wise": 3,
    # 3: Overall is undefined unless all six tasks were scored (session 13)
    "geneval": 3,
    # 2: the frozen parses' fingerprint is recorded and compared by the gate (session 12)
    "compbench_blip_vqa": 2,
    "compbench_spatial_2d": 2,
    "compbench_spatial_3d": 2,
    "compbench_numeracy": 2,
    "compbench_complex": 2,
}

# Backends whose answers are code of this suite (not downloaded weights): a scorer naming one carries its version
# in its settings, so a change to the backend rescores exactly the cells it scored.
BACKEND_VERSIONS = {
    # 2: slivers 1-2 px wide no longer crash the cross template
    # 3: only objects the world can draw get a shape (a square box within rounding, a side the world's sizes
    #    allow); a colour needs half the object's pixels; GenEval colours match detections by IoU (session 14)
    "shapes_oracle": 3,
}

# How the shapes world renders its scenes: a bump re-renders the training images and the FID reference (and so
# retrains what is trained on them). 2: textures anchored at the box centre (session 14).
SHAPES_RENDER_VERSION = 2
