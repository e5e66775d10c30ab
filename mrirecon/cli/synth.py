"""`mrirecon synth`: write a synthetic multi-coil dataset (mrirecon/synthetic/generator.py)."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..synthetic.generator import ANATOMIES, DEFAULTS, KINDS, SYNTH_PARTS, TEST_CENTER_FRACTIONS, generate, summary


def _parser() -> argparse.ArgumentParser:
    defaults = "\n".join(f"  {k:8s} " + ", ".join(f"{n}={v}" for n, v in d.items()) for k, d in DEFAULTS.items())
    p = argparse.ArgumentParser(
        prog="mrirecon synth",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Write a synthetic multi-coil MRI dataset (anatomy-like phantoms, loop-coil arrays, noise) as\n"
            "DIR/train, DIR/val, DIR/test (~70/15/15) in the layouts of mrirecon/data/layouts.py:\n"
            "  knee2d, brain2d  fastMRI multi-coil: kspace (slices, coils, 2*rH, rW) complex64 (readout 2x\n"
            "                   oversampled), reconstruction_rss (slices, rH, rW), ismrmrd_header\n"
            "  knee3d           hybrid 3D: kspace (X, coils, Ky, Kz), readout already in image space,\n"
            "                   reconstruction_rss (X, Ky, Kz)\n"
            "  cine             kspace (slices, frames, coils, H, W), reconstruction_rss (slices, frames, H, W),\n"
            "                   frames span one heartbeat (attr frame_period_ms)\n"
            "attrs: acquisition, max, norm (of reconstruction_rss), patient_id, anatomy, noise_level, noise_sigma\n"
            "(brain2d --anatomy mni152: also mni152_affine, (slice, row, col, 1) -> MNI mm; --anatomy synth: also\n"
            "synth_draw (JSON of what was drawn) and synth_off; --anatomy real: real_scan, real_scan_source,\n"
            "real_scan_contrast, real_scan_draw)."),
        epilog=(f"defaults:\n{defaults}\n\nexample:\n"
                "  mrirecon synth --kind knee2d --out data/synthetic/knee2d --volumes 20"))
    p.add_argument("--kind", required=True, choices=KINDS, help="anatomy and layout")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder (split folders go inside)")
    p.add_argument("--volumes", type=int, help="number of volumes (files) over all splits")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed, same arrays (default 0)")
    p.add_argument("--coils", type=int, help="receive coils")
    p.add_argument("--slices", type=int, help="slices per volume (knee2d, brain2d, cine)")
    p.add_argument("--frames", type=int, help="cardiac frames over one heartbeat (cine)")
    p.add_argument("--size", type=int, nargs="+", metavar="N",
                   help="image size: rH rW (recon size; k-space is 2*rH x rW) for knee2d/brain2d, "
                        "X Ky Kz for knee3d, H W for cine")
    p.add_argument("--noise", type=float, metavar="SIGMA",
                   help="median k-space noise std relative to the image maximum (complex, E|n|^2 = sigma^2); each "
                        "volume draws its level log-uniformly in [SIGMA/2, 2 SIGMA] (attrs noise_level, noise_sigma)")
    p.add_argument("--zoom", type=float, metavar="Z",
                   help="knee2d/brain2d: field of view divided by Z, so the anatomy looks Z times larger (default 1)")
    p.add_argument("--anatomy", choices=ANATOMIES, default=None,
                   help="model: the built-in anatomical phantoms (default); mni152 (brain2d only): axial slabs of the "
                        "MNI ICBM152 2009a template as redistributed in the nilearn package (read from the installed "
                        "package, not copied), under a random rigid transform, with synthesised contrast; synth "
                        "(brain2d only): new brains from the template's tissue maps under a random diffeomorphic "
                        "deformation, random tissue contrast, bias field and in-plane blur; real (brain2d only, "
                        "test split only): real brain scans shipped inside the nibabel and dipy packages")
    p.add_argument("--synth-off", nargs="+", choices=SYNTH_PARTS, metavar="PART",
                   help=f"--anatomy synth: switch off these randomisations ({', '.join(SYNTH_PARTS)}; ablations)")
    p.add_argument("--test-only", action="store_true",
                   help="write every volume into the test split (a held-out test set)")
    p.add_argument("--undersampled-test", type=int, metavar="R", choices=sorted(TEST_CENTER_FRACTIONS),
                   help="knee2d/brain2d: write the test split as fastMRI's test files (undersampled k-space at R, "
                        "its `mask`, no reconstruction_rss)")
    p.add_argument("--layout", choices=("h5", "cmrxrecon"), default="h5",
                   help="cine only: cmrxrecon writes the CMRxRecon challenge layout (MATLAB v7.3 .mat files in "
                        "MultiCoil/Cine/TrainingSet/{FullSample,AccFactor04,08,10}/Pnnn, mrirecon/data/readers/cmrxrecon.py)")
    p.add_argument("--overwrite", action="store_true", help="replace .h5 files in non-empty split folders")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    """`mrirecon synth ...`; exit status 0, or 2 (SystemExit) with a message for bad options."""
    parser = _parser()
    args = parser.parse_args(argv)
    start = time.perf_counter()
    if args.layout == "cmrxrecon":  # the CMRxRecon challenge layout (issue 12)
        from ..synthetic.cmrxrecon import generate_cmrxrecon

        if args.kind != "cine" or args.zoom is not None or args.undersampled_test is not None or args.anatomy:
            parser.exit(2, f"{parser.prog}: error: --layout cmrxrecon writes cine data only (--kind cine, "
                        "no --zoom / --undersampled-test)\n")
        try:
            files = generate_cmrxrecon(args.out, args.volumes, args.seed, overwrite=args.overwrite, coils=args.coils,
                                       slices=args.slices, frames=args.frames, noise=args.noise,
                                       size=None if args.size is None else tuple(args.size))
        except (ValueError, FileExistsError) as e:
            parser.exit(2, f"{parser.prog}: error: {e}\n")
        print(f"cine (cmrxrecon layout): wrote {sum(map(len, files.values()))} patients in "
              f"{time.perf_counter() - start:.1f} s under {args.out}/{{train,val,test}}/MultiCoil/Cine/TrainingSet")
        return 0
    try:
        files = generate(args.kind, args.out, args.volumes, args.seed, coils=args.coils, slices=args.slices,
                         frames=args.frames, size=None if args.size is None else tuple(args.size),
                         noise=args.noise, overwrite=args.overwrite, progress=not args.no_progress, zoom=args.zoom,
                         undersampled_test=args.undersampled_test, anatomy=args.anatomy,
                         synth_off=None if args.synth_off is None else tuple(args.synth_off), test_only=args.test_only)
    except (ValueError, FileExistsError) as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    print(f"{args.kind}: wrote {sum(map(len, files.values()))} volumes in {time.perf_counter() - start:.1f} s")
    print(summary(files))
    return 0

