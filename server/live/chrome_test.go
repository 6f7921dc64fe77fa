package live

const viewerPage = ``
