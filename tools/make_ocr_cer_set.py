"""The OCR accuracy set of tests/ocr_accuracy.rs: rendered lines of text on crops of the fixture
photos, their ground truth, and RapidOCR's character error rate on them per model set.

Each image holds one line of Latin or Chinese text (words, numbers, prices, dates, codes)
rendered with Debian's DejaVu (fonts-dejavu-core) or Noto CJK (fonts-noto-cjk) fonts at 12-64 px,
turned by up to +-10 degrees, given a mild perspective, and laid on a crop of one of the photos
in tests/fixtures/images, sometimes on a plate as signs and labels have. Everything comes from
one seeded random generator, so running this again writes the same images (given the same
fonts and Pillow). The fonts are needed only here: the images are committed.

Then RapidOCR (rapidocr 3.10.0 with onnxruntime, tools/requirements-ocr.txt) reads every image
with both model sets that tools/fetch_ocr_models.sh fetches (PP-OCRv4 mobile from
rapidocr_onnxruntime 1.3.24 and PP-OCRv6 small from rapidocr 3.10.0, both through rapidocr
3.10.0's pipeline, the one clipdex follows), and the character error rate is written to
tests/fixtures/ocr-cer/rapidocr-cer.json.

The error rate: an image's lines are joined in reading order; the text read and the truth are
brought to NFKC with all white space removed (a space between words is CTC's least certain
decision and says nothing of whether the characters were read); the rate is the sum over images
of the Levenshtein distance (in code points) divided by the sum of the truth's lengths, for the
Latin images, the Chinese images and all of them. tests/ocr_accuracy.rs computes it the same way.

    /root/venv-ocr/bin/python tools/make_ocr_cer_set.py [--workers=N] [--no-measure] [MODELS_DIR]
        # MODELS_DIR defaults to ~/.cache/clipdex-ci/ocr-models; N processes per model set
"""

import json
import math
import os
import random
import sys
import unicodedata
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter, ImageFont, ImageStat

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "ocr-cer"
PHOTOS = ROOT / "tests" / "fixtures" / "images"
BACKGROUNDS = ["astronaut.jpg", "camera_gray.jpg", "chelsea_exif3.jpg", "coffee.png", "coffee_12mp.jpg",
               "rocket.webp", "panorama_4000x300.jpg"]
DEJAVU = Path("/usr/share/fonts/truetype/dejavu")
NOTO = Path("/usr/share/fonts/opentype/noto")
# (file, face index in the collection): index 2 of Noto's collections is Simplified Chinese.
LATIN_FONTS = [(DEJAVU / n, 0) for n in ["DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif.ttf",
                                          "DejaVuSerif-Bold.ttf", "DejaVuSansMono.ttf",
                                          "DejaVuSansCondensed.ttf", "DejaVuSans-Oblique.ttf"]]
CJK_FONTS = [(NOTO / "NotoSansCJK-Regular.ttc", 2), (NOTO / "NotoSansCJK-Bold.ttc", 2),
             (NOTO / "NotoSerifCJK-Regular.ttc", 2), (NOTO / "NotoSerifCJK-Bold.ttc", 2)]
COUNT = 200  # half Latin, half Chinese
SEED = 38

LATIN_WORDS = """
coffee latte espresso croissant bakery market station airport platform exit entrance parking
open closed sale discount total receipt invoice ticket street avenue road bridge museum library
hotel pharmacy garden river north south east west welcome thank you please keep left right
fresh bread cheese apples oranges milk tea water bottle table window door floor room office
monday tuesday friday saturday summer winter morning evening price amount change cash card
""".split()
LATIN_NAMES = ["Main Street", "Corner Cafe", "City Hall", "Gate B12", "Platform 4", "Room 218",
               "Bill no.", "Order", "Invoice", "Tel.", "Exit", "Total", "Subtotal", "VAT", "Seat"]
CJK_WORDS = """
奶茶 咖啡 面包 牛奶 苹果 香蕉 蛋糕 米饭 面条 饺子 包子 豆浆 绿茶 红茶 果汁 啤酒 矿泉水
欢迎光临 营业时间 停车场 出口 入口 地铁站 火车站 机场 医院 银行 学校 超市 商场 餐厅 酒店
图书馆 博物馆 公园 广场 大街 路口 北京 上海 广州 深圳 杭州 南京 成都 武汉 西安 重庆
价格 总计 合计 找零 现金 优惠 特价 打折 新品 推荐 招牌 今日 本店 全场 会员 发票 收据
请勿吸烟 小心地滑 禁止停车 安全出口 洗手间 电梯 楼梯 办公室 会议室 前台 服务台 售票处
星期一 星期五 周末 早上 晚上 春天 夏天 秋天 冬天 东 南 西 北 中心 人民 路 号 楼 层 室
""".split()


def latin_line(rng):
    kind = rng.random()
    if kind < 0.25:
        words = rng.sample(LATIN_WORDS, rng.randint(1, 3))
        words = [w.capitalize() if rng.random() < 0.4 else w.upper() if rng.random() < 0.2 else w for w in words]
        return " ".join(words)
    if kind < 0.45:  # a price
        item = rng.choice(LATIN_WORDS).capitalize()
        price = f"{rng.randint(0, 199)}.{rng.randint(0, 99):02d}"
        return rng.choice([f"{item} {price}", f"{item} ${price}", f"{item} {price} EUR", f"{price} EUR"])
    if kind < 0.65:  # a name and a number
        return f"{rng.choice(LATIN_NAMES)} {rng.randint(1, 99999)}"
    if kind < 0.8:  # a date or a time
        return rng.choice([
            f"{rng.randint(2000, 2030)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
            f"{rng.randint(1, 28):02d}/{rng.randint(1, 12):02d}/{rng.randint(2000, 2030)}",
            f"Open {rng.randint(6, 11)}:{rng.choice(['00', '30'])}-{rng.randint(17, 23)}:{rng.choice(['00', '30'])}",
        ])
    if kind < 0.9:  # a code
        letters = "".join(rng.choice("ABCDEFGHJKLMNPRSTUVWXYZ") for _ in range(rng.randint(2, 3)))
        return f"{letters}{rng.randint(100, 9999)}"
    return f"{rng.choice(LATIN_WORDS).capitalize()} {rng.choice(LATIN_WORDS)} {rng.randint(2, 48)}"


def chinese_line(rng):
    kind = rng.random()
    if kind < 0.4:
        return "".join(rng.sample(CJK_WORDS, rng.randint(1, 3)))
    if kind < 0.7:  # a price
        item = rng.choice(CJK_WORDS)
        yuan = rng.randint(1, 299)
        return rng.choice([f"{item}{yuan}元", f"{item} {yuan}元", f"{item}￥{yuan}.{rng.randint(0, 99):02d}",
                           f"{item} {yuan}.{rng.randint(0, 9)}元"])
    if kind < 0.85:  # an address
        return f"{rng.choice(CJK_WORDS)}路{rng.randint(1, 999)}号"
    return f"{rng.randint(2000, 2030)}年{rng.randint(1, 12)}月{rng.randint(1, 28)}日"


def background(rng, photos, w, h):
    photo = photos[rng.randrange(len(photos))]
    # A crop of a random size (at least the canvas, or the whole photo if smaller), scaled to it.
    scale = rng.uniform(1.0, 3.0)
    cw = min(photo.width, max(8, int(w * scale)))
    ch = min(photo.height, max(8, int(h * scale)))
    if cw / ch > w / h:
        cw = max(8, int(ch * w / h))
    else:
        ch = max(8, int(cw * h / w))
    x = rng.randint(0, photo.width - cw)
    y = rng.randint(0, photo.height - ch)
    return photo.crop((x, y, x + cw, y + ch)).resize((w, h), Image.BILINEAR)


def perspective(layer, rng, amount):
    """A mild perspective: each corner moved by up to `amount` of the size."""
    w, h = layer.size
    src = [(0, 0), (w, 0), (w, h), (0, h)]
    dst = [(x + rng.uniform(-amount, amount) * w, y + rng.uniform(-amount, amount) * h) for x, y in src]
    # Coefficients mapping output (dst) points to input (src) points.
    rows, rhs = [], []
    for (X, Y), (x, y) in zip(dst, src):
        rows.append([X, Y, 1, 0, 0, 0, -x * X, -x * Y])
        rhs.append(x)
        rows.append([0, 0, 0, X, Y, 1, -y * X, -y * Y])
        rhs.append(y)
    coeffs = solve(rows, rhs)
    return layer.transform((w, h), Image.PERSPECTIVE, coeffs, Image.BICUBIC)


def solve(a, b):
    """Gaussian elimination for the 8x8 perspective system."""
    n = len(b)
    m = [row[:] + [v] for row, v in zip(a, b)]
    for i in range(n):
        p = max(range(i, n), key=lambda r: abs(m[r][i]))
        m[i], m[p] = m[p], m[i]
        for r in range(n):
            if r != i:
                f = m[r][i] / m[i][i]
                m[r] = [x - f * y for x, y in zip(m[r], m[i])]
    return [m[i][n] / m[i][i] for i in range(n)]


def render(rng, photos, text, script, index):
    font_file, face = rng.choice(LATIN_FONTS if script == "latin" else CJK_FONTS)
    # Sizes 12-64 px, more of them small, as text in photos is.
    size = int(round(12 + 52 * rng.random() ** 1.6))
    font = ImageFont.truetype(str(font_file), size, index=face)
    left, top, right, bottom = font.getbbox(text)
    pad = max(4, size // 3)
    tw, th = right - left + 2 * pad, bottom - top + 2 * pad
    # The text as an alpha mask, turned and slanted.
    mask = Image.new("L", (tw, th), 0)
    ImageDraw.Draw(mask).text((pad - left, pad - top), text, font=font, fill=255)
    plate = rng.random() < 0.35
    plate_mask = Image.new("L", (tw, th), 255) if plate else None
    amount = rng.uniform(0.0, 0.06)
    state = rng.getstate()
    mask = perspective(mask, rng, amount)
    if plate_mask is not None:
        rng.setstate(state)
        plate_mask = perspective(plate_mask, rng, amount)
    angle = rng.uniform(-10, 10)
    mask = mask.rotate(angle, resample=Image.BICUBIC, expand=True)
    if plate_mask is not None:
        plate_mask = plate_mask.rotate(angle, resample=Image.BICUBIC, expand=True)
    # The canvas: a margin around the text, and no wider than 1.4 x its height. RapidOCR's
    # detector sees every photo with its short side enlarged to 736 px, so the cost of an image
    # is set by its shape, not its size: a near-square canvas keeps the test fast.
    mw, mh = mask.size
    cw = mw + rng.randint(8, 60)
    ch = max(mh + rng.randint(8, 60), int(cw / 1.4))
    canvas = background(rng, photos, cw, ch).convert("RGB")
    x, y = rng.randint(0, cw - mw), rng.randint(0, ch - mh)
    region = canvas.crop((x, y, x + mw, y + mh)).convert("L")
    light = ImageStat.Stat(region).mean[0] > 128
    if plate_mask is not None:
        shade = rng.randint(215, 250) if rng.random() < 0.6 else rng.randint(10, 60)
        tint = tuple(max(0, min(255, shade + rng.randint(-20, 20))) for _ in range(3))
        canvas.paste(Image.new("RGB", (mw, mh), tint), (x, y), plate_mask.point(lambda v: v * 0.9))
        light = shade > 128
    ink = tuple(rng.randint(0, 70) for _ in range(3)) if light else tuple(rng.randint(200, 255) for _ in range(3))
    if not plate:
        # Text straight on a photo carries a soft outline of the other tone, as captions do.
        halo = mask.filter(ImageFilter.MaxFilter(3)).filter(ImageFilter.GaussianBlur(1))
        other = (255 - ink[0], 255 - ink[1], 255 - ink[2])
        canvas.paste(Image.new("RGB", (mw, mh), other), (x, y), halo.point(lambda v: v * 0.8))
    canvas.paste(Image.new("RGB", (mw, mh), ink), (x, y), mask)
    name = f"{index:03d}-{script}.jpg"
    canvas.save(OUT / name, quality=85)
    return {"file": name, "script": script, "text": text, "size": size,
            "font": f"{font_file.name}#{face}", "angle": round(angle, 2)}


def generate():
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("*.jpg"):
        old.unlink()
    rng = random.Random(SEED)
    photos = [Image.open(PHOTOS / n).convert("RGB") for n in BACKGROUNDS]
    truth = []
    for i in range(COUNT):
        script = "latin" if i % 2 == 0 else "chinese"
        text = latin_line(rng) if script == "latin" else chinese_line(rng)
        truth.append(render(rng, photos, text, script, i))
    with open(OUT / "truth.json", "w", encoding="utf-8") as f:
        json.dump(truth, f, ensure_ascii=False, indent=0)
        f.write("\n")
    return truth


def squeeze(text):
    return "".join(c for c in unicodedata.normalize("NFKC", text) if not c.isspace())


def distance(a, b):
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def cer(truth, read):
    """Per script and overall: {errors, chars, cer (percent)}."""
    out = {}
    for group in ("latin", "chinese", "overall"):
        errors = chars = 0
        for t in truth:
            if group != "overall" and t["script"] != group:
                continue
            want = squeeze(t["text"])
            errors += distance(squeeze(read[t["file"]]), want)
            chars += len(want)
        out[group] = {"errors": errors, "chars": chars, "cer": round(100.0 * errors / chars, 3)}
    return out


def measure_part(name, params, part):
    from rapidocr import RapidOCR

    engine = RapidOCR(params={k: str(v) for k, v in params.items()} | {"Global.log_level": "error"})
    read = {}
    for i, t in enumerate(part):
        out = engine(str(OUT / t["file"]))
        read[t["file"]] = "".join(out.txts) if out.txts is not None else ""
        if i % 10 == 0:
            print(name, t["file"], file=sys.stderr, flush=True)
    return name, read


def measure(truth, models_dir, workers):
    from concurrent.futures import ProcessPoolExecutor

    sets = {
        "v4": {
            "Det.model_path": models_dir / "v4" / "ch_PP-OCRv4_det_infer.onnx",
            "Rec.model_path": models_dir / "v4" / "ch_PP-OCRv4_rec_infer.onnx",
            "Cls.model_path": models_dir / "v4" / "ch_ppocr_mobile_v2.0_cls_infer.onnx",
        },
        "v6": {
            "Det.model_path": models_dir / "v6" / "PP-OCRv6_det_small.onnx",
            "Rec.model_path": models_dir / "v6" / "PP-OCRv6_rec_small.onnx",
            "Cls.model_path": models_dir / "v6" / "ch_ppocr_mobile_v2.0_cls_mobile.onnx",
        },
    }
    report = {"rapidocr": "3.10.0", "images": len(truth),
              "metric": "Levenshtein distance in code points over NFKC text without white space, "
                        "summed over images, divided by the truth's length; lines joined in reading order; percent"}
    # Each model set's images in `workers` parts, one process each (the results do not depend
    # on the split: every image is read on its own).
    reads = {name: {} for name in sets}
    with ProcessPoolExecutor(workers * len(sets)) as pool:
        jobs = [pool.submit(measure_part, name, params, truth[k::workers])
                for name, params in sets.items() for k in range(workers)]
        for job in jobs:
            name, read = job.result()
            reads[name].update(read)
    reads = {name: {t["file"]: read[t["file"]] for t in truth} for name, read in reads.items()}
    for name, read in reads.items():
        report[name] = cer(truth, read)
        report[name]["read"] = read
        print(name, {k: v for k, v in report[name].items() if k != "read"}, file=sys.stderr)
    with open(OUT / "rapidocr-cer.json", "w", encoding="utf-8") as f:
        json.dump(report, f, ensure_ascii=False, indent=1)
        f.write("\n")


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    models = Path(args[0]) if args else Path(
        os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "clipdex-ci" / "ocr-models"
    if "--no-measure" in sys.argv:
        generate()
    else:
        workers = next((int(a.split("=")[1]) for a in sys.argv if a.startswith("--workers=")), 1)
        measure(generate(), models, workers)
