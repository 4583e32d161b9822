// The dashboard's script: a live preview while typing, instant image
// uploads (pick or drop), and a save's progress. Everything it does also
// works without it, by plain form posts.
(() => {
  "use strict";
  const form = document.getElementById("edit");
  if (form) {
    const previewButton = document.getElementById("preview-button");
    const csrf = form.dataset.csrf;
    let timer = null;
    // Renders the draft into the preview frame (the form posts to it).
    const preview = (delay) => {
      clearTimeout(timer);
      timer = setTimeout(() => form.requestSubmit(previewButton), delay);
    };
    form.addEventListener("input", (e) => { if (e.target.type !== "file") preview(400); });
    preview(0);
    // The preview is live: the hint to press Preview is for a page without the script.
    const hint = document.getElementById("preview-hint");
    if (hint) hint.hidden = true;

    const upload = async (field, file) => {
      const status = field.querySelector(".upload-status");
      const input = field.querySelector("input[type=file]");
      status.textContent = "Uploading " + file.name + "…";
      try {
        const response = await fetch(form.dataset.media, {
          method: "POST", body: file, credentials: "same-origin",
          headers: { "X-CSRF-Token": csrf, "Content-Type": file.type || "application/octet-stream" },
        });
        const body = await response.json();
        if (!response.ok) throw new Error(body.error || response.statusText);
        field.querySelector("input[data-image]").value = body.ref;
        const thumb = field.querySelector("img.thumb");
        thumb.src = body.url;
        thumb.hidden = false;
        status.textContent = "Uploaded: save to publish it.";
        preview(0);
      } catch (err) {
        status.textContent = "Not uploaded: " + err.message;
      }
      input.value = "";
    };
    for (const field of form.querySelectorAll("[data-drop]")) {
      const input = field.querySelector("input[type=file]");
      input.addEventListener("change", () => { if (input.files[0]) upload(field, input.files[0]); });
      field.addEventListener("dragover", (e) => { e.preventDefault(); field.classList.add("over"); });
      field.addEventListener("dragleave", () => field.classList.remove("over"));
      field.addEventListener("drop", (e) => {
        e.preventDefault();
        field.classList.remove("over");
        if (e.dataTransfer.files[0]) upload(field, e.dataTransfer.files[0]);
      });
    }
  }

  // A save's way to the site: queued → building → published.
  const box = document.querySelector("[data-change]");
  if (box) {
    const words = {
      queued: "Saved. Queued: it is published after a short pause.",
      building: "Saved. Building your page…",
      published: "Published.",
    };
    const poll = async () => {
      let next = 1000;
      try {
        const response = await fetch(box.dataset.url, { credentials: "same-origin" });
        if (response.status === 429) next = 5000;
        else if (response.ok) {
          const change = await response.json();
          box.className = "status status-" + change.status;
          box.querySelector(".state").textContent =
            words[change.status] || "Publishing failed: " + (change.error || "unknown error");
          const link = box.querySelector(".url");
          if (change.status === "published") {
            if (change.paths.length) {
              link.href = change.paths[0];
              link.textContent = "See it live at " + change.paths[0];
            }
            link.hidden = false;
            return;
          }
          if (change.status === "failed") return;
        }
      } catch (err) {
        next = 3000;
      }
      setTimeout(poll, next);
    };
    poll();
  }

  // Domains not live yet: follow the background checks by reading the page again.
  const domains = document.querySelector("[data-domains-waiting]");
  if (domains) {
    const follow = async () => {
      try {
        const response = await fetch(location.pathname, { credentials: "same-origin" });
        if (response.ok) {
          const page = new DOMParser().parseFromString(await response.text(), "text/html");
          const fresh = page.getElementById("domains");
          if (fresh) {
            domains.innerHTML = fresh.innerHTML;
            if (!fresh.hasAttribute("data-domains-waiting")) return;
          }
        }
      } catch (err) {
        // try again at the next turn
      }
      setTimeout(follow, 5000);
    };
    setTimeout(follow, 5000);
  }
})();
