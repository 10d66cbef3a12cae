// The input-image stage: the image, an inpainting mask painted over it, and the
// outpainting preview (the image placed on its extended canvas).
//
// The mask canvas has the image's own pixel size, so the exported mask lines up with the
// image the server receives. Strokes are drawn in a tint (shown half-transparent over the
// image); on export every painted pixel becomes white on black, which is what limner's
// inpainting reads (white = repaint).

const TINT = "rgb(255, 32, 120)";
const EMPTY = "#8a8f98";

export class MaskEditor {
  constructor({ stage, imageCanvas, maskCanvas, cursor }) {
    this.stage = stage;
    this.imageCanvas = imageCanvas;
    this.maskCanvas = maskCanvas;
    this.cursor = cursor;
    this.image = null;
    this.mode = "img2img";
    this.sides = { left: 0, right: 0, up: 0, down: 0 };
    this.tool = "brush";
    this.size = 24;
    this.painting = false;
    this.last = null;
    this.keyPos = null;
    this.spaceDown = false;
    this.#listen();
  }

  get hasImage() {
    return this.image !== null;
  }

  // A decoded image (HTMLImageElement or ImageBitmap); the mask starts empty.
  setImage(image) {
    this.image = image;
    this.maskCanvas.width = image.naturalWidth || image.width;
    this.maskCanvas.height = image.naturalHeight || image.height;
    this.keyPos = null;
    this.#redraw();
  }

  setMode(mode) {
    this.mode = mode;
    this.painting = false;
    this.#redraw();
  }

  setOutpaint(sides) {
    this.sides = { ...sides };
    if (this.mode === "outpaint") this.#redraw();
  }

  clear() {
    const ctx = this.maskCanvas.getContext("2d");
    ctx.clearRect(0, 0, this.maskCanvas.width, this.maskCanvas.height);
  }

  fill() {
    const ctx = this.maskCanvas.getContext("2d");
    ctx.globalCompositeOperation = "source-over";
    ctx.fillStyle = TINT;
    ctx.fillRect(0, 0, this.maskCanvas.width, this.maskCanvas.height);
  }

  invert() {
    const { width, height } = this.maskCanvas;
    const inverted = document.createElement("canvas");
    inverted.width = width;
    inverted.height = height;
    const ictx = inverted.getContext("2d");
    ictx.fillStyle = TINT;
    ictx.fillRect(0, 0, width, height);
    ictx.globalCompositeOperation = "destination-out";
    ictx.drawImage(this.maskCanvas, 0, 0);
    this.clear();
    this.maskCanvas.getContext("2d").drawImage(inverted, 0, 0);
  }

  isEmpty() {
    const { width, height } = this.maskCanvas;
    if (!width || !height) return true;
    const alpha = this.maskCanvas.getContext("2d").getImageData(0, 0, width, height).data;
    for (let i = 3; i < alpha.length; i += 4) if (alpha[i] > 0) return false;
    return true;
  }

  // The mask as a PNG data URL: white where painted, black elsewhere.
  toPngDataUrl() {
    const { width, height } = this.maskCanvas;
    const out = document.createElement("canvas");
    out.width = width;
    out.height = height;
    const ctx = out.getContext("2d");
    ctx.drawImage(this.maskCanvas, 0, 0);
    ctx.globalCompositeOperation = "source-in";
    ctx.fillStyle = "#ffffff";
    ctx.fillRect(0, 0, width, height);
    ctx.globalCompositeOperation = "destination-over";
    ctx.fillStyle = "#000000";
    ctx.fillRect(0, 0, width, height);
    return out.toDataURL("image/png");
  }

  // -- drawing ---------------------------------------------------------------------

  #redraw() {
    this.stage.hidden = !this.image;
    if (!this.image) return;
    const imgW = this.maskCanvas.width;
    const imgH = this.maskCanvas.height;
    const canvas = this.imageCanvas;
    const outpainting = this.mode === "outpaint";
    const left = outpainting ? this.sides.left : 0;
    const up = outpainting ? this.sides.up : 0;
    canvas.width = imgW + left + (outpainting ? this.sides.right : 0);
    canvas.height = imgH + up + (outpainting ? this.sides.down : 0);
    const ctx = canvas.getContext("2d");
    ctx.fillStyle = EMPTY;
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    ctx.drawImage(this.image, left, up, imgW, imgH);
    if (outpainting && (left || up || this.sides.right || this.sides.down)) {
      ctx.strokeStyle = "#ffffff";
      ctx.setLineDash([6, 4]);
      ctx.lineWidth = Math.max(1, Math.round(canvas.width / 256));
      ctx.strokeRect(left + 0.5, up + 0.5, imgW - 1, imgH - 1);
    }
    const masking = this.mode === "inpaint";
    this.maskCanvas.hidden = !masking;
    this.stage.classList.toggle("masking", masking);
    if (!masking) this.cursor.hidden = true;
  }

  #scale() {
    const rect = this.maskCanvas.getBoundingClientRect();
    return rect.width > 0 ? rect.width / this.maskCanvas.width : 1;
  }

  #toImagePoint(event) {
    const rect = this.maskCanvas.getBoundingClientRect();
    return {
      x: ((event.clientX - rect.left) * this.maskCanvas.width) / rect.width,
      y: ((event.clientY - rect.top) * this.maskCanvas.height) / rect.height,
    };
  }

  #stroke(from, to) {
    const ctx = this.maskCanvas.getContext("2d");
    ctx.globalCompositeOperation = this.tool === "eraser" ? "destination-out" : "source-over";
    ctx.strokeStyle = TINT;
    ctx.fillStyle = TINT;
    ctx.lineWidth = this.size;
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    if (from.x === to.x && from.y === to.y) {
      ctx.beginPath();
      ctx.arc(to.x, to.y, this.size / 2, 0, Math.PI * 2);
      ctx.fill();
    } else {
      ctx.beginPath();
      ctx.moveTo(from.x, from.y);
      ctx.lineTo(to.x, to.y);
      ctx.stroke();
    }
    ctx.globalCompositeOperation = "source-over";
  }

  #showCursor(point) {
    const scale = this.#scale();
    const diameter = Math.max(4, this.size * scale);
    this.cursor.hidden = false;
    this.cursor.style.width = `${diameter}px`;
    this.cursor.style.height = `${diameter}px`;
    this.cursor.style.left = `${this.maskCanvas.offsetLeft + point.x * scale - diameter / 2}px`;
    this.cursor.style.top = `${this.maskCanvas.offsetTop + point.y * scale - diameter / 2}px`;
    this.cursor.classList.toggle("eraser", this.tool === "eraser");
  }

  #listen() {
    const canvas = this.maskCanvas;
    canvas.addEventListener("pointerdown", (event) => {
      if (this.mode !== "inpaint" || event.button !== 0) return;
      event.preventDefault();
      canvas.setPointerCapture(event.pointerId);
      this.painting = true;
      this.last = this.#toImagePoint(event);
      this.#stroke(this.last, this.last);
    });
    canvas.addEventListener("pointermove", (event) => {
      const point = this.#toImagePoint(event);
      this.#showCursor(point);
      if (!this.painting) return;
      this.#stroke(this.last, point);
      this.last = point;
    });
    const stop = () => {
      this.painting = false;
      this.last = null;
    };
    canvas.addEventListener("pointerup", stop);
    canvas.addEventListener("pointercancel", stop);
    canvas.addEventListener("pointerleave", () => {
      if (!this.painting && document.activeElement !== canvas) this.cursor.hidden = true;
    });

    // Keyboard painting: arrows move the brush, Space held paints, Shift moves faster.
    canvas.addEventListener("focus", () => {
      if (this.mode !== "inpaint") return;
      this.keyPos ??= { x: canvas.width / 2, y: canvas.height / 2 };
      this.#showCursor(this.keyPos);
    });
    canvas.addEventListener("blur", () => {
      this.spaceDown = false;
      this.cursor.hidden = true;
    });
    canvas.addEventListener("keydown", (event) => {
      if (this.mode !== "inpaint" || event.ctrlKey || event.metaKey || event.altKey) return;
      this.keyPos ??= { x: canvas.width / 2, y: canvas.height / 2 };
      const step = Math.max(2, Math.round(this.size / 2)) * (event.shiftKey ? 4 : 1);
      const moves = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };
      if (event.key in moves) {
        event.preventDefault();
        const [dx, dy] = moves[event.key];
        const next = {
          x: Math.min(canvas.width, Math.max(0, this.keyPos.x + dx * step)),
          y: Math.min(canvas.height, Math.max(0, this.keyPos.y + dy * step)),
        };
        if (this.spaceDown) this.#stroke(this.keyPos, next);
        this.keyPos = next;
        this.#showCursor(next);
      } else if (event.key === " " || event.key === "Enter") {
        event.preventDefault();
        if (event.key === " ") this.spaceDown = true;
        if (!event.repeat) this.#stroke(this.keyPos, this.keyPos);
      }
    });
    canvas.addEventListener("keyup", (event) => {
      if (event.key === " ") this.spaceDown = false;
    });
  }
}
